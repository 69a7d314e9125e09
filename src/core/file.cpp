// Memory-mapped input files and atomic (temporary + rename) outputs.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <vector>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "lmpress/core.h"

namespace lmpress {

namespace fs = std::filesystem;

static std::atomic<int> g_file_load{int(FileLoad::Mmap)};
void set_file_load(FileLoad mode) { g_file_load.store(int(mode)); }
FileLoad file_load() {
  if (const char* e = std::getenv("LMPRESS_MMAP")) {
    if (std::string(e) == "1") return FileLoad::Mmap;
    if (std::string(e) == "0") return FileLoad::Copy;
  }
  return FileLoad(g_file_load.load());
}

namespace {
// MemAvailable in bytes (0 when /proc/meminfo cannot be read).
uint64_t mem_available() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}
}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(path, std::string("cannot stat: ") + std::strerror(e));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail(path, "is a directory, expected a file");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "is not a regular file (a device, FIFO or socket), expected a model file");
  }
  size_ = size_t(st.st_size);
  FileLoad mode = file_load();
  if (mode == FileLoad::Auto) {
    const uint64_t avail = mem_available();
    mode = avail > 0 && uint64_t(size_) <= avail / 2 ? FileLoad::Copy : FileLoad::Mmap;
  }
  if (size_ > 0 && mode == FileLoad::Copy) {
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail(path, "cannot allocate " + std::to_string(size_) + " bytes to read the file into: " + std::strerror(e));
    }
    (void)::madvise(p, size_, MADV_HUGEPAGE);  // a hint: refused where THP is off
    // Read in parallel slices: most of the time is the kernel zeroing fresh pages (first touch),
    // which the threads share out.
    const size_t kSlice = size_t(64) << 20;
    const int nt = int(std::min<size_t>(size_t(std::max(1u, std::thread::hardware_concurrency())),
                                        (size_ + kSlice - 1) / kSlice));
    std::vector<std::string> errs(static_cast<size_t>(nt));
    auto read_part = [&](int t) {
      const size_t b = size_ / size_t(nt) * size_t(t), e = t + 1 == nt ? size_ : size_ / size_t(nt) * size_t(t + 1);
      size_t off = b;
      while (off < e) {
        const ssize_t r = ::pread(fd, static_cast<char*>(p) + off, e - off, off_t(off));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
          errs[size_t(t)] = r < 0 ? std::string("read error: ") + std::strerror(errno)
                                  : "file shrank while being read (no data at byte " + std::to_string(off) + " of " +
                                        std::to_string(size_) + ")";
          return;
        }
        off += size_t(r);
      }
    };
    {
      // (a thread that cannot start leaves its slice to this one)
      std::vector<std::thread> th;
      int launched = 1;
      try {
        for (; launched < nt; ++launched) th.emplace_back(read_part, launched);
      } catch (const std::system_error&) {
      }
      read_part(0);
      for (int t = launched; t < nt; ++t) read_part(t);
      for (auto& x : th) x.join();
    }
    for (const std::string& e : errs)
      if (!e.empty()) {
        ::munmap(p, size_);
        ::close(fd);
        fail(path, e);
      }
    (void)::mprotect(p, size_, PROT_READ);
    data_ = static_cast<const uint8_t*>(p);
    copied_ = true;
  } else if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail(path, std::string("cannot mmap: ") + std::strerror(e));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

std::string read_text_file(const std::string& path, size_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(path, std::string("cannot stat: ") + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail(path, "is a directory, expected a text file");
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISSOCK(st.st_mode))
    fail(path, "is a device or socket, expected a text file");
  if (S_ISREG(st.st_mode) && uint64_t(st.st_size) > max_bytes)
    fail(path, "text file is " + std::to_string(uint64_t(st.st_size)) + " bytes, more than the limit of " +
                   std::to_string(max_bytes) + " bytes");
  std::string out;
  if (S_ISREG(st.st_mode)) out.reserve(size_t(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      fail(path, std::string("read error: ") + std::strerror(errno));
    }
    if (r == 0) break;
    if (out.size() + size_t(r) > max_bytes)
      fail(path, "input is more than the limit of " + std::to_string(max_bytes) + " bytes");
    out.append(buf, size_t(r));
  }
  return out;
}

bool file_exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}
bool is_directory(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}
size_t file_size(const std::string& path) {
  std::error_code ec;
  auto s = fs::file_size(path, ec);
  if (ec) fail(path, "cannot get size: " + ec.message());
  return size_t(s);
}

namespace {

// A temporary name beside path: "<path>.tmp.<pid>.<n>", unique within the process.
std::string tmp_name(const std::string& path) {
  static std::atomic<unsigned> counter{0};
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
}

const char* kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISLNK(m)) return "a symbolic link";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

// "out/" -> "out" (a directory output named with a trailing slash).
std::string strip_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

bool is_lmpress_dir(const std::string& dir) {
  struct stat st {};
  return ::lstat((dir + "/" + kOutputDirMarker).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// rename() that never replaces an existing path (renameat2 RENAME_NOREPLACE; link+unlink for
// files where the file system lacks it). Returns 0 or an errno value.
int rename_noreplace(const std::string& from, const std::string& to, bool is_dir) {
#ifdef RENAME_NOREPLACE
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return errno;
#endif
  if (is_dir) {
    struct stat st {};
    if (::lstat(to.c_str(), &st) == 0) return EEXIST;
    return ::rename(from.c_str(), to.c_str()) == 0 ? 0 : errno;
  }
  if (::link(from.c_str(), to.c_str()) != 0) return errno;
  ::unlink(from.c_str());
  return 0;
}

}  // namespace

void check_output_path(const std::string& path_in, OutputKind kind, bool overwrite) {
  if (path_in.empty()) fail("output", "empty output path");
  const std::string path = kind == OutputKind::Directory ? strip_slashes(path_in) : path_in;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    fail(path, std::string("cannot check output path: ") + std::strerror(errno));
  }
  if (kind == OutputKind::File) {
    if (!S_ISREG(st.st_mode))
      fail(path, std::string("output path exists and is ") + kind_of(st.st_mode) +
                     "; refusing to replace it (choose another output path)");
  } else {
    if (!S_ISDIR(st.st_mode))
      fail(path, std::string("output directory path exists and is ") +
                     (S_ISREG(st.st_mode) ? "a regular file" : kind_of(st.st_mode)) +
                     "; refusing to replace it (choose another output path)");
    if (!is_lmpress_dir(path))
      fail(path, std::string("output directory exists and was not written by lmpress (no ") +
                     kOutputDirMarker + " marker); refusing to replace it (choose another output path)");
  }
  if (!overwrite) fail(path, "output exists; pass --force to overwrite it");
}

AtomicFile::AtomicFile(const std::string& path, bool overwrite)
    : path_(path), tmp_(tmp_name(path)), overwrite_(overwrite) {
  check_output_path(path, OutputKind::File, overwrite);
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(path, std::string("cannot create output: ") + std::strerror(errno));
  buf_.reserve(1 << 20);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::flush() {
  size_t off = 0;
  while (off < buf_.size()) {
    ssize_t w = ::write(fd_, buf_.data() + off, buf_.size() - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(path_, std::string("write failed: ") + std::strerror(errno));
    }
    off += size_t(w);
  }
  buf_.clear();
}

void AtomicFile::write(const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  if (n >= (1u << 20)) {
    flush();
    size_t off = 0;
    while (off < n) {
      ssize_t w = ::write(fd_, p + off, n - off);
      if (w < 0) {
        if (errno == EINTR) continue;
        fail(path_, std::string("write failed: ") + std::strerror(errno));
      }
      off += size_t(w);
    }
  } else {
    buf_.insert(buf_.end(), p, p + n);
    if (buf_.size() >= (1u << 20)) flush();
  }
  written_ += n;
}

void AtomicFile::pad_to(size_t alignment) {
  static const uint8_t zeros[64] = {};
  while (written_ % alignment) write(zeros, std::min<size_t>(64, alignment - written_ % alignment));
}

void AtomicFile::write_at(uint64_t offset, const void* data, size_t n) {
  flush();
  const uint8_t* p = static_cast<const uint8_t*>(data);
  size_t off = 0;
  while (off < n) {
    const ssize_t w = ::pwrite(fd_, p + off, n - off, off_t(offset + off));
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(path_, std::string("write failed: ") + std::strerror(errno));
    }
    off += size_t(w);
  }
}

void AtomicFile::commit() {
  flush();
  if (::fsync(fd_) != 0) fail(path_, std::string("fsync failed: ") + std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  // Checked again: the path may have appeared (or changed kind) while the output was written.
  check_output_path(path_, OutputKind::File, overwrite_);
  if (overwrite_) {
    if (::rename(tmp_.c_str(), path_.c_str()) != 0)
      fail(path_, std::string("cannot rename temporary file into place: ") + std::strerror(errno));
  } else if (int e = rename_noreplace(tmp_, path_, false); e != 0) {
    fail(path_, e == EEXIST ? std::string("output appeared while writing; pass --force to overwrite it")
                            : std::string("cannot rename temporary file into place: ") + std::strerror(e));
  }
  committed_ = true;
}

AtomicDir::AtomicDir(const std::string& dir, bool overwrite)
    : dir_(strip_slashes(dir)), tmp_(tmp_name(dir_)), overwrite_(overwrite) {
  check_output_path(dir_, OutputKind::Directory, overwrite);
  if (dir_ == "/" || dir_ == "." || dir_ == "..") fail(dir, "is not a usable output directory name");
  if (::mkdir(tmp_.c_str(), 0755) != 0)
    fail(dir, "cannot create temporary output directory " + tmp_ + ": " + std::strerror(errno));
  const std::string marker = tmp_ + "/" + kOutputDirMarker;
  const int fd = ::open(marker.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int e = errno;
    ::rmdir(tmp_.c_str());
    fail(dir, "cannot create " + marker + ": " + std::strerror(e));
  }
  static const char kText[] = "written by lmpress; lmpress replaces this directory only with --force\n";
  const ssize_t w = ::write(fd, kText, sizeof kText - 1);
  (void)w;
  ::close(fd);
}

AtomicDir::~AtomicDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
}

void AtomicDir::commit() {
  check_output_path(dir_, OutputKind::Directory, overwrite_);
  struct stat st {};
  if (::lstat(dir_.c_str(), &st) == 0) {
    // Replace an lmpress-written directory (checked above): move it aside first so a failure
    // loses nothing, then delete it.
    const std::string old = tmp_name(dir_ + ".old");
    std::error_code ec;
    fs::rename(dir_, old, ec);
    if (ec) fail(dir_, "cannot replace existing directory: " + ec.message());
    if (int e = rename_noreplace(tmp_, dir_, true); e != 0) {
      fs::rename(old, dir_, ec);
      fail(dir_, std::string("cannot move output into place: ") + std::strerror(e));
    }
    fs::remove_all(old, ec);
  } else if (int e = rename_noreplace(tmp_, dir_, true); e != 0) {
    fail(dir_, e == EEXIST ? std::string("output appeared while writing; pass --force to overwrite it")
                           : std::string("cannot move output into place: ") + std::strerror(e));
  }
  committed_ = true;
}

}  // namespace lmpress
