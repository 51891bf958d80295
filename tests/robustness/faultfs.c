// An LD_PRELOAD shim that makes a process's disk flushes stall or fail on
// demand, so the robustness harness can inject disk faults into an
// unmodified muster.
//
// fsync, fdatasync, syncfs and sync_file_range read the file named by
// MUSTER_FAULTFS_CONTROL on every call; its first word says what to do:
//   ok     call the real function (also when the file is absent)
//   stall  block until the word changes, then do what the new word says
//   eio    fail with EIO without flushing
// Without MUSTER_FAULTFS_CONTROL the shim only forwards.  Go programs (etcd)
// make system calls directly and are not affected by LD_PRELOAD.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum mode { MODE_OK, MODE_STALL, MODE_EIO };

static const char* control_path(void) { return getenv("MUSTER_FAULTFS_CONTROL"); }

static enum mode read_mode(void) {
  const char* path = control_path();
  if (path == NULL) return MODE_OK;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return MODE_OK;
  char buf[16];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return MODE_OK;
  buf[n] = '\0';
  if (strncmp(buf, "stall", 5) == 0) return MODE_STALL;
  if (strncmp(buf, "eio", 3) == 0) return MODE_EIO;
  return MODE_OK;
}

static void note(const char* what) {
  char line[128];
  int n = snprintf(line, sizeof line, "faultfs: %s (pid %d)\n", what, (int)getpid());
  if (n > 0) {
    ssize_t ignored = write(2, line, (size_t)n);
    (void)ignored;
  }
}

// Applies the current mode; returns 0 to go on with the real call, -1 (errno
// set) to fail it.
static int gate(void) {
  static __thread int stalled_noted = 0;
  for (;;) {
    enum mode m = read_mode();
    if (m == MODE_OK) {
      stalled_noted = 0;
      return 0;
    }
    if (m == MODE_EIO) {
      note("flush failed with EIO");
      errno = EIO;
      return -1;
    }
    if (!stalled_noted) {
      note("flush stalled");
      stalled_noted = 1;
    }
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

__attribute__((constructor)) static void announce(void) {
  if (control_path() != NULL) note("active");
}

#define REAL(name, type) ((type)dlsym(RTLD_NEXT, name))

int fsync(int fd) {
  if (gate() != 0) return -1;
  return REAL("fsync", int (*)(int))(fd);
}

int fdatasync(int fd) {
  if (gate() != 0) return -1;
  return REAL("fdatasync", int (*)(int))(fd);
}

int syncfs(int fd) {
  if (gate() != 0) return -1;
  return REAL("syncfs", int (*)(int))(fd);
}

int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags) {
  if (gate() != 0) return -1;
  return REAL("sync_file_range", int (*)(int, off64_t, off64_t, unsigned int))(fd, offset, nbytes,
                                                                               flags);
}
