//! `tern serve --config tern.toml`: every `serve` flag can be set in a TOML file, under
//! the flag's name (`data-dir` or `data_dir`). The file's settings become command-line
//! arguments placed before the real ones, so clap validates them exactly like flags and
//! a flag given on the command line overrides the file. Unknown keys are errors that
//! name the key and the file. A repeatable flag takes a list of strings.

use std::ffi::OsString;
use std::path::Path;

use clap::Command;

/// Keys a config file may not set (they are about the file itself).
const NOT_IN_FILE: &[&str] = &["config", "print-config", "help", "version"];

/// If `argv` is `tern serve ... --config FILE ...`, returns argv with the file's settings
/// inserted right after `serve`; otherwise returns it unchanged.
pub fn expand(argv: Vec<OsString>, cli: &Command) -> Result<Vec<OsString>, String> {
    if argv.get(1).and_then(|a| a.to_str()) != Some("serve") {
        return Ok(argv);
    }
    let Some(path) = config_path(&argv[2..]) else { return Ok(argv) };
    let serve = cli.find_subcommand("serve").ok_or("the serve command is missing")?;
    let from_file = file_args(Path::new(&path), serve)?;
    let mut out = Vec::with_capacity(argv.len() + from_file.len());
    out.extend_from_slice(&argv[..2]);
    out.extend(from_file);
    out.extend_from_slice(&argv[2..]);
    Ok(out)
}

fn config_path(args: &[OsString]) -> Option<OsString> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            return iter.next().cloned();
        }
        if let Some(value) = text.strip_prefix("--config=") {
            return Some(OsString::from(value));
        }
    }
    None
}

/// The file's settings as `--flag=value` arguments.
fn file_args(path: &Path, serve: &Command) -> Result<Vec<OsString>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let table: toml::Table =
        text.parse().map_err(|e| format!("config file {} is not valid TOML: {e}", path.display()))?;
    let mut args = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let known = serve.get_arguments().find(|a| a.get_long() == Some(flag.as_str()));
        let Some(arg) = known.filter(|_| !NOT_IN_FILE.contains(&flag.as_str())) else {
            return Err(format!(
                "unknown key `{key}` in config file {}: keys are the `tern serve` flags (see tern serve --help)",
                path.display()
            ));
        };
        let takes_value = arg.get_action().takes_values();
        match (value, takes_value) {
            (toml::Value::Boolean(on), false) => {
                if on {
                    args.push(OsString::from(format!("--{flag}")));
                }
            }
            (toml::Value::String(s), true) => args.push(OsString::from(format!("--{flag}={s}"))),
            (toml::Value::Integer(n), true) => args.push(OsString::from(format!("--{flag}={n}"))),
            (toml::Value::Float(n), true) => args.push(OsString::from(format!("--{flag}={n}"))),
            (toml::Value::Boolean(b), true) => args.push(OsString::from(format!("--{flag}={b}"))),
            // A repeatable flag (`broker-config = ["a=1", "b=2"]`): one argument per item.
            (toml::Value::Array(items), true)
                if arg.get_action().takes_values() && matches!(arg.get_action(), clap::ArgAction::Append) =>
            {
                for item in items {
                    match item {
                        toml::Value::String(s) => args.push(OsString::from(format!("--{flag}={s}"))),
                        other => {
                            return Err(format!(
                                "key `{key}` in config file {} has an unusable list item {other}: use strings",
                                path.display()
                            ))
                        }
                    }
                }
            }
            (other, _) => {
                return Err(format!(
                    "key `{key}` in config file {} has an unusable value {other}: use {}",
                    path.display(),
                    if takes_value { "a string or a number" } else { "true or false" }
                ))
            }
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cli() -> Command {
        Command::new("tern").subcommand(
            Command::new("serve")
                .args_override_self(true)
                .arg(Arg::new("listen").long("listen"))
                .arg(Arg::new("data_dir").long("data-dir"))
                .arg(Arg::new("no_pin").long("no-pin").action(ArgAction::SetTrue))
                .arg(Arg::new("broker_config").long("broker-config").action(ArgAction::Append))
                .arg(Arg::new("config").long("config")),
        )
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn file_settings_come_first_so_flags_override_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tern.toml");
        std::fs::write(&path, "listen = \"0.0.0.0:9092\"\ndata_dir = \"/data\"\nno-pin = true\n").unwrap();
        let config = path.to_str().unwrap();
        let expanded = expand(argv(&["tern", "serve", "--config", config, "--listen", "1.2.3.4:1"]), &cli()).unwrap();
        let matches = cli().try_get_matches_from(&expanded).unwrap();
        let serve = matches.subcommand_matches("serve").unwrap();
        assert_eq!(serve.get_one::<String>("listen").unwrap(), "1.2.3.4:1", "the flag wins");
        assert_eq!(serve.get_one::<String>("data_dir").unwrap(), "/data", "the file sets the rest");
        assert!(serve.get_flag("no_pin"));
    }

    #[test]
    fn lists_become_repeated_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tern.toml");
        std::fs::write(&path, "broker_config = [\"log.retention.hours=24\", \"compression.type=zstd\"]\n").unwrap();
        let config = path.to_str().unwrap();
        let expanded = expand(argv(&["tern", "serve", "--config", config]), &cli()).unwrap();
        let matches = cli().try_get_matches_from(&expanded).unwrap();
        let values: Vec<&String> =
            matches.subcommand_matches("serve").unwrap().get_many::<String>("broker_config").unwrap().collect();
        assert_eq!(values, ["log.retention.hours=24", "compression.type=zstd"]);
        std::fs::write(&path, "listen = [\"a\", \"b\"]\n").unwrap();
        assert!(expand(argv(&["tern", "serve", "--config", config]), &cli()).unwrap_err().contains("unusable value"));
        std::fs::write(&path, "broker_config = [1]\n").unwrap();
        assert!(expand(argv(&["tern", "serve", "--config", config]), &cli()).unwrap_err().contains("list item"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tern.toml");
        let config = format!("--config={}", path.display());
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let error = expand(argv(&["tern", "serve", &config]), &cli()).unwrap_err();
        assert!(error.contains("unknown key `lisen`"), "{error}");
        std::fs::write(&path, "config = \"other.toml\"\n").unwrap();
        assert!(expand(argv(&["tern", "serve", &config]), &cli()).unwrap_err().contains("unknown key `config`"));
        std::fs::write(&path, "listen = [1, 2]\n").unwrap();
        assert!(expand(argv(&["tern", "serve", &config]), &cli()).unwrap_err().contains("unusable value"));
        std::fs::write(&path, "listen = \n").unwrap();
        assert!(expand(argv(&["tern", "serve", &config]), &cli()).unwrap_err().contains("not valid TOML"));
        let untouched = argv(&["tern", "bench", "produce"]);
        assert_eq!(expand(untouched.clone(), &cli()).unwrap(), untouched);
    }
}
