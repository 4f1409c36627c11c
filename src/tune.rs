//! `tern tune`: host settings that matter for a thread-per-core broker, compared with what
//! we recommend (`--check`, read-only; the exit code says whether anything is off) and
//! changed (`--apply`, as root, one line per change). `tuning/README.md` explains each
//! value; `tuning/99-tern.conf` is the equivalent sysctl file.

use std::fs;
use std::path::{Path, PathBuf};

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Differs from the recommendation.
    Off,
    /// Not applicable or not readable here (e.g. no cpufreq in a VM).
    NotApplicable,
}

/// One row of `tern tune --check`.
#[derive(Debug, Clone)]
pub struct Finding {
    pub name: &'static str,
    pub current: String,
    pub recommended: String,
    pub status: Status,
    /// How `--apply` changes it, if it can: (file to write, value).
    pub fix: Vec<(PathBuf, String)>,
    /// What to do by hand when `--apply` cannot.
    pub advice: Option<String>,
}

/// What the checks need to know about the broker that will run here.
#[derive(Debug, Clone)]
pub struct TuneTarget {
    pub data_dir: PathBuf,
    pub cores: Vec<usize>,
    pub memory_per_shard: u64,
    /// Where `/proc` and `/sys` are found: `/` on a host; a prepared tree in tests.
    pub root: PathBuf,
}

impl TuneTarget {
    fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn sysctl_at_least(target: &TuneTarget, name: &'static str, path: &str, minimum: u64) -> Finding {
    let path = target.path(path);
    match read_trimmed(&path).and_then(|v| v.parse::<u64>().ok()) {
        Some(current) => Finding {
            name,
            current: current.to_string(),
            recommended: format!(">= {minimum}"),
            status: if current >= minimum { Status::Ok } else { Status::Off },
            fix: vec![(path, minimum.to_string())],
            advice: None,
        },
        None => not_applicable(name, &format!(">= {minimum}")),
    }
}

fn not_applicable(name: &'static str, recommended: &str) -> Finding {
    Finding {
        name,
        current: "n/a".into(),
        recommended: recommended.into(),
        status: Status::NotApplicable,
        fix: vec![],
        advice: None,
    }
}

/// The value in brackets of a sysfs choice list: "always [madvise] never" -> "madvise".
fn selected(choices: &str) -> Option<&str> {
    let start = choices.find('[')? + 1;
    let end = choices[start..].find(']')? + start;
    Some(&choices[start..end])
}

fn cpu_governor(target: &TuneTarget) -> Finding {
    let mut governors = Vec::new();
    let mut files = Vec::new();
    if let Ok(entries) = fs::read_dir(target.path("/sys/devices/system/cpu")) {
        for entry in entries.flatten() {
            let path = entry.path().join("cpufreq/scaling_governor");
            if let Some(governor) = read_trimmed(&path) {
                governors.push(governor);
                files.push(path);
            }
        }
    }
    if governors.is_empty() {
        return not_applicable("cpu governor", "performance");
    }
    governors.sort();
    governors.dedup();
    let ok = governors == ["performance"];
    Finding {
        name: "cpu governor",
        current: governors.join(","),
        recommended: "performance".into(),
        status: if ok { Status::Ok } else { Status::Off },
        fix: files.into_iter().map(|f| (f, "performance".to_string())).collect(),
        advice: None,
    }
}

fn swappiness(target: &TuneTarget) -> Finding {
    let path = target.path("/proc/sys/vm/swappiness");
    match read_trimmed(&path).and_then(|v| v.parse::<u64>().ok()) {
        Some(current) => Finding {
            name: "vm.swappiness",
            current: current.to_string(),
            recommended: "<= 1".into(),
            status: if current <= 1 { Status::Ok } else { Status::Off },
            fix: vec![(path, "1".into())],
            advice: None,
        },
        None => not_applicable("vm.swappiness", "<= 1"),
    }
}

fn transparent_huge_pages(target: &TuneTarget) -> Finding {
    let path = target.path("/sys/kernel/mm/transparent_hugepage/enabled");
    match read_trimmed(&path) {
        Some(choices) => {
            let current = selected(&choices).unwrap_or(&choices).to_string();
            Finding {
                name: "transparent huge pages",
                status: if current == "always" { Status::Off } else { Status::Ok },
                current,
                recommended: "madvise or never".into(),
                fix: vec![(path, "madvise".into())],
                advice: None,
            }
        }
        None => not_applicable("transparent huge pages", "madvise or never"),
    }
}

/// The sysfs directory of the whole disk holding `dir` (partitions resolve to their disk).
fn block_device_of(target: &TuneTarget, dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let existing = dir.ancestors().find(|p| p.exists())?;
    let dev = fs::metadata(existing).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = fs::canonicalize(target.path(&format!("/sys/dev/block/{major}:{minor}"))).ok()?;
    if sys.join("queue").exists() {
        Some(sys)
    } else {
        sys.parent().filter(|p| p.join("queue").exists()).map(Path::to_path_buf)
    }
}

fn disk_scheduler(target: &TuneTarget) -> Finding {
    let Some(device) = block_device_of(target, &target.data_dir) else {
        return not_applicable("disk scheduler", "none");
    };
    let path = device.join("queue/scheduler");
    let name = device.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    match read_trimmed(&path) {
        Some(choices) => {
            let current = selected(&choices).unwrap_or(&choices).to_string();
            Finding {
                name: "disk scheduler",
                status: if current == "none" { Status::Ok } else { Status::Off },
                current: format!("{current} ({name})"),
                recommended: "none".into(),
                fix: vec![(path, "none".into())],
                advice: None,
            }
        }
        None => not_applicable("disk scheduler", "none"),
    }
}

fn parse_cpu_set(list: &str) -> Vec<usize> {
    crate::config::parse_cpu_list(list).unwrap_or_default()
}

/// IRQs of network and storage devices should not land on broker cores.
fn irq_affinity(target: &TuneTarget) -> Finding {
    let cores = &target.cores;
    let Ok(interrupts) = fs::read_to_string(target.path("/proc/interrupts")) else {
        return not_applicable("irq affinity", "device IRQs off broker cores");
    };
    let online = crate::config::online_cpus();
    let spare: Vec<usize> = online.iter().copied().filter(|c| !cores.contains(c)).collect();
    let device_words = ["virtio", "nvme", "eth", "ens", "enp", "mlx", "ixgbe", "i40e", "ena", "ahci", "xhci"];
    let mut overlapping = Vec::new();
    let mut fix = Vec::new();
    for line in interrupts.lines().skip(1) {
        let Some((irq, rest)) = line.trim_start().split_once(':') else { continue };
        if irq.parse::<u32>().is_err() || !device_words.iter().any(|w| rest.contains(w)) {
            continue;
        }
        let affinity_path = target.path(&format!("/proc/irq/{irq}/smp_affinity_list"));
        let Some(affinity) = read_trimmed(&affinity_path) else { continue };
        if parse_cpu_set(&affinity).iter().any(|c| cores.contains(c)) {
            overlapping.push(format!("{irq}->{affinity}"));
            if !spare.is_empty() {
                let list: Vec<String> = spare.iter().map(usize::to_string).collect();
                fix.push((affinity_path, list.join(",")));
            }
        }
    }
    let broker = cores.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    Finding {
        name: "irq affinity",
        current: if overlapping.is_empty() {
            "no device IRQs on broker cores".into()
        } else {
            let shown: Vec<&str> = overlapping.iter().take(3).map(String::as_str).collect();
            let more = if overlapping.len() > 3 { " ..." } else { "" };
            format!("{} on broker cores ({}{more})", overlapping.len(), shown.join(" "))
        },
        recommended: format!("device IRQs off cores {broker}"),
        status: if overlapping.is_empty() { Status::Ok } else { Status::Off },
        advice: (spare.is_empty() && !overlapping.is_empty())
            .then(|| "every online CPU runs a shard: leave one for IRQs (fewer --cores)".to_string()),
        fix,
    }
}

fn rlimit(resource: libc::__rlimit_resource_t) -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct we pass.
    (unsafe { libc::getrlimit(resource, &mut limit) } == 0).then_some(limit.rlim_cur)
}

fn memlock(target: &TuneTarget) -> Finding {
    let needed = target.cores.len() as u64 * (target.memory_per_shard + (512 << 10));
    let current = rlimit(libc::RLIMIT_MEMLOCK);
    let unlimited = current == Some(libc::RLIM_INFINITY);
    Finding {
        name: "memlock limit",
        current: match current {
            Some(_) if unlimited => "unlimited".into(),
            Some(bytes) => format!("{} KiB", bytes / 1024),
            None => "n/a".into(),
        },
        recommended: format!(">= {} KiB ({} shards)", needed / 1024, target.cores.len()),
        status: match current {
            Some(bytes) if unlimited || bytes >= needed => Status::Ok,
            Some(_) => Status::Off,
            None => Status::NotApplicable,
        },
        fix: vec![],
        advice: Some("ulimit -l unlimited, or LimitMEMLOCK=infinity in the systemd unit (tuning/tern.service)".into()),
    }
}

fn nofile() -> Finding {
    const WANTED: u64 = 65_536;
    let current = rlimit(libc::RLIMIT_NOFILE);
    Finding {
        name: "open files limit",
        current: current.map_or("n/a".into(), |n| n.to_string()),
        recommended: format!(">= {WANTED}"),
        status: match current {
            Some(n) if n >= WANTED => Status::Ok,
            Some(_) => Status::Off,
            None => Status::NotApplicable,
        },
        fix: vec![],
        advice: Some("ulimit -n 65536, or LimitNOFILE=65536 in the systemd unit (tuning/tern.service)".into()),
    }
}

fn clocksource(target: &TuneTarget) -> Finding {
    let base = target.path("/sys/devices/system/clocksource/clocksource0");
    match read_trimmed(base.join("current_clocksource")) {
        Some(current) => {
            let available = read_trimmed(base.join("available_clocksource")).unwrap_or_default();
            let tsc_available = available.split_whitespace().any(|c| c == "tsc");
            Finding {
                name: "clocksource",
                status: if current == "tsc" || !tsc_available { Status::Ok } else { Status::Off },
                recommended: if tsc_available {
                    "tsc".into()
                } else {
                    format!("tsc (not offered here; {current} is fine)")
                },
                current,
                fix: vec![(base.join("current_clocksource"), "tsc".into())],
                advice: None,
            }
        }
        None => not_applicable("clocksource", "tsc"),
    }
}

/// Every check, in the order they are printed.
pub fn check(target: &TuneTarget) -> Vec<Finding> {
    vec![
        cpu_governor(target),
        sysctl_at_least(target, "fs.aio-max-nr", "/proc/sys/fs/aio-max-nr", 1_048_576),
        sysctl_at_least(target, "net.core.somaxconn", "/proc/sys/net/core/somaxconn", 4096),
        sysctl_at_least(target, "net.ipv4.tcp_max_syn_backlog", "/proc/sys/net/ipv4/tcp_max_syn_backlog", 4096),
        swappiness(target),
        transparent_huge_pages(target),
        disk_scheduler(target),
        irq_affinity(target),
        memlock(target),
        nofile(),
        clocksource(target),
    ]
}

/// The `--check` table.
pub fn render(findings: &[Finding]) -> String {
    let mut out = format!("{:<30} {:<46} {:<34} {}\n", "setting", "current", "recommended", "status");
    for f in findings {
        let status = match f.status {
            Status::Ok => "ok",
            Status::Off => "OFF",
            Status::NotApplicable => "n/a",
        };
        out.push_str(&format!("{:<30} {:<46} {:<34} {status}\n", f.name, f.current, f.recommended));
    }
    let off = findings.iter().filter(|f| f.status == Status::Off).count();
    if off == 0 {
        out.push_str("everything checked is as recommended\n");
    } else {
        out.push_str(&format!(
            "{off} setting(s) differ from the recommendation: `tern tune --apply` (as root) changes what it can\n"
        ));
        for f in findings.iter().filter(|f| f.status == Status::Off && f.fix.is_empty()) {
            if let Some(advice) = &f.advice {
                out.push_str(&format!("  {}: {advice}\n", f.name));
            }
        }
    }
    out
}

/// Applies every fix for settings that are off; returns one line per change (or failure).
pub fn apply(findings: &[Finding]) -> Vec<Result<String, String>> {
    let mut lines = Vec::new();
    for finding in findings.iter().filter(|f| f.status == Status::Off) {
        if finding.fix.is_empty() {
            let advice = finding.advice.as_deref().unwrap_or("change it by hand");
            lines.push(Err(format!("{}: cannot change it from here: {advice}", finding.name)));
            continue;
        }
        for (path, value) in &finding.fix {
            match fs::write(path, value) {
                Ok(()) => lines.push(Ok(format!("{}: wrote {value} to {}", finding.name, path.display()))),
                Err(error) => {
                    lines.push(Err(format!("{}: cannot write {value} to {}: {error}", finding.name, path.display())))
                }
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracketed_choice_is_the_selected_one() {
        assert_eq!(selected("always [madvise] never"), Some("madvise"));
        assert_eq!(selected("[none] mq-deadline"), Some("none"));
        assert_eq!(selected("none"), None);
    }

    #[test]
    fn the_table_lists_every_check_and_counts_what_is_off() {
        let target = TuneTarget {
            data_dir: std::env::temp_dir(),
            cores: vec![0],
            memory_per_shard: 1 << 20,
            root: PathBuf::from("/"),
        };
        let findings = check(&target);
        assert_eq!(findings.len(), 11);
        let table = render(&findings);
        for name in
            ["cpu governor", "fs.aio-max-nr", "net.core.somaxconn", "vm.swappiness", "irq affinity", "clocksource"]
        {
            assert!(table.contains(name), "{name} missing from\n{table}");
        }
        let off = findings.iter().filter(|f| f.status == Status::Off).count();
        assert_eq!(table.contains("everything checked is as recommended"), off == 0);
    }
}
