"""Does POSIX_FADV_RANDOM stop a readahead that already started? usage (root): ra_test.py COLD_FILE random|chain|chain-dontneed.
Reads 32 MiB with sendfile in 256 KiB steps and counts read I/Os at the disk (/sys/block/vda/stat)."""
import os, sys, time
def stat():
    f = open('/sys/block/vda/stat').read().split()
    return int(f[0]), int(f[2])  # read ios, read sectors
path, mode = sys.argv[1], sys.argv[2]
os.system('sync; echo 3 > /proc/sys/vm/drop_caches')
fd = os.open(path, os.O_RDONLY)
null = os.open('/dev/null', os.O_WRONLY)
pos = 0
if mode in ('chain', 'chain-dontneed'):
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    pos += os.sendfile(null, fd, pos, 1 << 20)   # a normal read first: readahead with marks
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
time.sleep(0.2)
r0 = stat()
for i in range(128):
    if mode == 'chain-dontneed':
        os.posix_fadvise(fd, pos + (256 << 10), 32 << 20, os.POSIX_FADV_DONTNEED)
    pos += os.sendfile(null, fd, pos, 256 << 10)
r1 = stat()
ios, sectors = r1[0] - r0[0], r1[1] - r0[1]
print(f"{mode}: read {128*256/1024:.0f} MiB by sendfile: {ios} read I/Os, {sectors*512/2**20:.1f} MiB from disk")
