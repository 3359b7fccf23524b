/*
 * lossyfs: a FUSE filesystem over a directory that keeps every file's data
 * writes in memory until the file is synced, and forgets them when told to:
 * what a power cut does to a page cache (the technique of LazyFS, much
 * reduced). The tests put the plugin's state directory on it, acknowledge
 * calls, cut, and start the plugin again on what a disk would hold.
 *
 *   lossyfs BACKING MOUNTPOINT [fuse options]   (foreground, single-threaded)
 *
 * Data (writes, truncation) stays in memory, per file, until fsync or
 * fdatasync of that file writes it to BACKING and syncs it there. The names
 * (create, mkdir, rename, unlink, link) go to BACKING at once, as a journaled
 * filesystem's metadata would. MOUNTPOINT/.lossyfs is the control file:
 * writing "cut" forgets every unsynced write; reading it gives counts:
 *   dirty_files N dirty_bytes N cut_files N cut_bytes N synced_files N
 * The kernel caches nothing: attributes are asked for each time, and a file's
 * pages are dropped when it is opened again (the plugin is started again after
 * a cut, so it reads what BACKING holds).
 *
 * Build: gcc -O2 -Wall lossyfs.c $(pkg-config --cflags --libs fuse3)
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <unistd.h>

#define CONTROL "/.lossyfs"

static char backing[PATH_MAX];

/* A file's content as written and not yet synced: its whole content, and its size. */
struct shadow {
  dev_t dev;
  ino_t ino;
  char *data;
  off_t size;
  size_t cap;
  /* The part written since the backing file was last synced (lo == hi: none; the size may still differ). */
  off_t lo, hi;
  /* The smallest size the file had since then (a truncation the backing file must get first). */
  off_t least;
  struct shadow *next;
};

static struct shadow *shadows;
static unsigned long cut_files, cut_bytes, synced_files;

/* A path names the control file (a path is NULL for a file unlinked while open: hard_remove). */
static int is_control(const char *p) { return p && strcmp(p, CONTROL) == 0; }

static void full(char *out, const char *p) { snprintf(out, PATH_MAX, "%s%s", backing, p); }

static struct shadow *find(dev_t dev, ino_t ino) {
  for (struct shadow *s = shadows; s; s = s->next)
    if (s->dev == dev && s->ino == ino) return s;
  return NULL;
}

static void forget(struct shadow *gone) {
  for (struct shadow **at = &shadows; *at; at = &(*at)->next)
    if (*at == gone) {
      *at = gone->next;
      free(gone->data);
      free(gone);
      return;
    }
}

static int reserve(struct shadow *s, off_t size) {
  if ((size_t)size <= s->cap) return 0;
  size_t cap = s->cap ? s->cap : 4096;
  while (cap < (size_t)size) cap *= 2;
  char *data = realloc(s->data, cap);
  if (!data) return -ENOMEM;
  memset(data + s->cap, 0, cap - s->cap);
  s->data = data;
  s->cap = cap;
  return 0;
}

/* The shadow of the file open as fd, made from what the backing file holds if there is none. */
static int shadow_of(int fd, struct shadow **out) {
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  struct shadow *s = find(st.st_dev, st.st_ino);
  if (!s) {
    s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    int err = reserve(s, st.st_size);
    if (err) {
      free(s);
      return err;
    }
    for (off_t done = 0; done < st.st_size;) {
      ssize_t n = pread(fd, s->data + done, st.st_size - done, done);
      if (n <= 0) {
        free(s->data);
        free(s);
        return n < 0 ? -errno : -EIO;
      }
      done += n;
    }
    s->size = st.st_size;
    s->lo = s->hi = 0;
    s->least = st.st_size;
    s->next = shadows;
    shadows = s;
  }
  *out = s;
  return 0;
}

/* Forgets the shadow of the file at path if this name is its last link (it is going). */
static void forget_if_last(const char *fp) {
  struct stat st;
  if (lstat(fp, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink <= 1) {
    struct shadow *s = find(st.st_dev, st.st_ino);
    if (s) forget(s);
  }
}

static int fix_size(struct stat *st) {
  struct shadow *s = S_ISREG(st->st_mode) ? find(st->st_dev, st->st_ino) : NULL;
  if (s) {
    st->st_size = s->size;
    st->st_blocks = (s->size + 511) / 512;
  }
  return 0;
}

static int truncate_fd(int fd, off_t size);

static void *lossy_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
  (void)conn;
  cfg->attr_timeout = 0;
  cfg->entry_timeout = 0;
  cfg->negative_timeout = 0;
  cfg->kernel_cache = 0;
  cfg->hard_remove = 1;
  return NULL;
}

static int lossy_getattr(const char *p, struct stat *st, struct fuse_file_info *fi) {
  if (is_control(p)) {
    memset(st, 0, sizeof *st);
    st->st_mode = S_IFREG | 0600;
    st->st_nlink = 1;
    return 0;
  }
  if (!p) { /* a file unlinked while open (directories have no handle here: they are asked by path) */
    if (!fi || fstat(fi->fh, st) < 0) return -ENOENT;
  } else {
    char fp[PATH_MAX];
    full(fp, p);
    if (lstat(fp, st) < 0) return -errno;
  }
  return fix_size(st);
}

static int lossy_readdir(const char *p, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi, enum fuse_readdir_flags flags) {
  (void)off, (void)fi, (void)flags;
  char fp[PATH_MAX];
  full(fp, p);
  DIR *d = opendir(fp);
  if (!d) return -errno;
  for (struct dirent *e; (e = readdir(d));) {
    struct stat st = {.st_ino = e->d_ino, .st_mode = (mode_t)e->d_type << 12};
    if (fill(buf, e->d_name, &st, 0, 0)) break;
  }
  closedir(d);
  return 0;
}

static int lossy_open(const char *p, struct fuse_file_info *fi) {
  if (is_control(p)) {
    fi->direct_io = 1;
    fi->fh = (uint64_t)-1;
    return 0;
  }
  char fp[PATH_MAX];
  full(fp, p);
  int fd = open(fp, O_RDWR);
  if (fd < 0 && errno == EISDIR) return -EISDIR;
  if (fd < 0) fd = open(fp, O_RDONLY);
  if (fd < 0) return -errno;
  fi->fh = fd;
  return (fi->flags & O_TRUNC) ? truncate_fd(fd, 0) : 0;
}

static int lossy_create(const char *p, mode_t mode, struct fuse_file_info *fi) {
  char fp[PATH_MAX];
  full(fp, p);
  int fd = open(fp, O_RDWR | O_CREAT | (fi->flags & O_EXCL), mode);
  if (fd < 0) return -errno;
  fi->fh = fd;
  return (fi->flags & O_TRUNC) ? truncate_fd(fd, 0) : 0;
}

static int control_read(char *buf, size_t size, off_t off) {
  unsigned long files = 0, bytes = 0;
  for (struct shadow *s = shadows; s; s = s->next) files++, bytes += s->size;
  char text[256];
  int len = snprintf(text, sizeof text, "dirty_files %lu dirty_bytes %lu cut_files %lu cut_bytes %lu synced_files %lu\n", files, bytes, cut_files, cut_bytes, synced_files);
  if (off >= len) return 0;
  if ((size_t)(len - off) < size) size = len - off;
  memcpy(buf, text + off, size);
  return size;
}

static int lossy_read(const char *p, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  if (is_control(p)) return control_read(buf, size, off);
  struct stat st;
  if (fstat(fi->fh, &st) < 0) return -errno;
  struct shadow *s = find(st.st_dev, st.st_ino);
  if (!s) {
    ssize_t n = pread(fi->fh, buf, size, off);
    return n < 0 ? -errno : n;
  }
  if (off >= s->size) return 0;
  if ((off_t)size > s->size - off) size = s->size - off;
  memcpy(buf, s->data + off, size);
  return size;
}

static int lossy_write(const char *p, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  if (is_control(p)) {
    if (size >= 3 && memcmp(buf, "cut", 3) == 0) {
      while (shadows) {
        cut_files++;
        cut_bytes += shadows->size;
        forget(shadows);
      }
      return size;
    }
    return -EINVAL;
  }
  struct shadow *s;
  int err = shadow_of(fi->fh, &s);
  if (err) return err;
  if ((err = reserve(s, off + size))) return err;
  if (off > s->size) memset(s->data + s->size, 0, off - s->size);
  memcpy(s->data + off, buf, size);
  if (off + (off_t)size > s->size) s->size = off + size;
  if (s->lo == s->hi) s->lo = off, s->hi = off + size;
  if (off < s->lo) s->lo = off;
  if (off + (off_t)size > s->hi) s->hi = off + size;
  return size;
}

static int truncate_fd(int fd, off_t size) {
  struct shadow *s;
  int err = shadow_of(fd, &s);
  if (err) return err;
  if ((err = reserve(s, size))) return err;
  if (size > s->size) memset(s->data + s->size, 0, size - s->size);
  s->size = size;
  if (size < s->least) s->least = size;
  if (s->hi > size) s->hi = size;
  if (s->lo > s->hi) s->lo = s->hi;
  return 0;
}

static int lossy_truncate(const char *p, off_t size, struct fuse_file_info *fi) {
  if (fi) return truncate_fd(fi->fh, size);
  if (!p) return -ENOENT;
  char fp[PATH_MAX];
  full(fp, p);
  int fd = open(fp, O_RDWR);
  if (fd < 0) return -errno;
  int err = truncate_fd(fd, size);
  close(fd);
  return err;
}

/* Writes what was written to the file's shadow to the backing file, gives it the shadow's size, and syncs it. */
static int lossy_fsync(const char *p, int datasync, struct fuse_file_info *fi) {
  (void)datasync;
  if (is_control(p)) return 0;
  struct stat st;
  if (fstat(fi->fh, &st) < 0) return -errno;
  struct shadow *s = find(st.st_dev, st.st_ino);
  if (!s) return 0;
  if (s->least < st.st_size && ftruncate(fi->fh, s->least) < 0) return -errno;
  for (off_t done = s->lo; done < s->hi;) {
    ssize_t n = pwrite(fi->fh, s->data + done, s->hi - done, done);
    if (n < 0) return -errno;
    done += n;
  }
  if (ftruncate(fi->fh, s->size) < 0 || fsync(fi->fh) < 0) return -errno;
  forget(s);
  synced_files++;
  return 0;
}

static int lossy_release(const char *p, struct fuse_file_info *fi) {
  if (is_control(p)) return 0;
  struct stat st;
  if (fstat(fi->fh, &st) == 0 && st.st_nlink == 0) {
    /* Its last name went while it was open: its data goes with it (its inode number may be given again). */
    struct shadow *s = find(st.st_dev, st.st_ino);
    if (s) forget(s);
  }
  close(fi->fh);
  return 0;
}

static int lossy_mkdir(const char *p, mode_t mode) {
  char fp[PATH_MAX];
  full(fp, p);
  return mkdir(fp, mode) < 0 ? -errno : 0;
}

static int lossy_rmdir(const char *p) {
  char fp[PATH_MAX];
  full(fp, p);
  return rmdir(fp) < 0 ? -errno : 0;
}

static int lossy_unlink(const char *p) {
  char fp[PATH_MAX];
  full(fp, p);
  forget_if_last(fp);
  return unlink(fp) < 0 ? -errno : 0;
}

static int lossy_rename(const char *from, const char *to, unsigned int flags) {
  if (flags) return -EINVAL;
  char ff[PATH_MAX], ft[PATH_MAX];
  full(ff, from);
  full(ft, to);
  forget_if_last(ft);
  return rename(ff, ft) < 0 ? -errno : 0;
}

static int lossy_link(const char *from, const char *to) {
  char ff[PATH_MAX], ft[PATH_MAX];
  full(ff, from);
  full(ft, to);
  return link(ff, ft) < 0 ? -errno : 0;
}

static int lossy_symlink(const char *target, const char *p) {
  char fp[PATH_MAX];
  full(fp, p);
  return symlink(target, fp) < 0 ? -errno : 0;
}

static int lossy_readlink(const char *p, char *buf, size_t size) {
  char fp[PATH_MAX];
  full(fp, p);
  ssize_t n = readlink(fp, buf, size - 1);
  if (n < 0) return -errno;
  buf[n] = 0;
  return 0;
}

static int lossy_chmod(const char *p, mode_t mode, struct fuse_file_info *fi) {
  if (!p) return fi && fchmod(fi->fh, mode) < 0 ? -errno : 0;
  char fp[PATH_MAX];
  full(fp, p);
  return chmod(fp, mode) < 0 ? -errno : 0;
}

static int lossy_chown(const char *p, uid_t uid, gid_t gid, struct fuse_file_info *fi) {
  if (!p) return fi && fchown(fi->fh, uid, gid) < 0 ? -errno : 0;
  char fp[PATH_MAX];
  full(fp, p);
  return lchown(fp, uid, gid) < 0 ? -errno : 0;
}

static int lossy_utimens(const char *p, const struct timespec tv[2], struct fuse_file_info *fi) {
  if (!p) return fi && futimens(fi->fh, tv) < 0 ? -errno : 0;
  if (is_control(p)) return 0;
  char fp[PATH_MAX];
  full(fp, p);
  return utimensat(AT_FDCWD, fp, tv, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int lossy_statfs(const char *p, struct statvfs *st) {
  (void)p;
  return statvfs(backing, st) < 0 ? -errno : 0;
}

static int lossy_fsyncdir(const char *p, int datasync, struct fuse_file_info *fi) {
  (void)p, (void)datasync, (void)fi;
  return 0; /* names reach the backing directory at once */
}

static const struct fuse_operations ops = {
    .init = lossy_init,
    .getattr = lossy_getattr,
    .readdir = lossy_readdir,
    .open = lossy_open,
    .create = lossy_create,
    .read = lossy_read,
    .write = lossy_write,
    .truncate = lossy_truncate,
    .fsync = lossy_fsync,
    .release = lossy_release,
    .mkdir = lossy_mkdir,
    .rmdir = lossy_rmdir,
    .unlink = lossy_unlink,
    .rename = lossy_rename,
    .link = lossy_link,
    .symlink = lossy_symlink,
    .readlink = lossy_readlink,
    .chmod = lossy_chmod,
    .chown = lossy_chown,
    .utimens = lossy_utimens,
    .statfs = lossy_statfs,
    .fsyncdir = lossy_fsyncdir,
};

int main(int argc, char *argv[]) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s BACKING MOUNTPOINT [fuse options]\n", argv[0]);
    return 2;
  }
  if (!realpath(argv[1], backing)) {
    perror(argv[1]);
    return 1;
  }
  /* fuse_main gets: program, mountpoint, -f -s, then the caller's options. */
  char *args[argc + 3];
  int n = 0;
  args[n++] = argv[0];
  args[n++] = argv[2];
  args[n++] = "-f";
  args[n++] = "-s";
  for (int i = 3; i < argc; i++) args[n++] = argv[i];
  args[n] = NULL;
  umask(0);
  return fuse_main(n, args, &ops, NULL);
}
