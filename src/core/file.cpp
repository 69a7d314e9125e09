// Memory-mapped input files and atomic (temporary + rename) outputs.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "lmpress/core.h"

namespace lmpress {

namespace fs = std::filesystem;

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
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
  size_ = size_t(st.st_size);
  if (size_ > 0) {
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

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, std::string("cannot open: ") + std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail(path, "read error");
  return ss.str();
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

static std::string tmp_name(const std::string& path) {
  return path + ".tmp." + std::to_string(::getpid());
}

AtomicFile::AtomicFile(const std::string& path) : path_(path), tmp_(tmp_name(path)) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
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
    buf_.assign(p, p + 0);
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
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    fail(path_, std::string("cannot rename temporary file into place: ") + std::strerror(errno));
  committed_ = true;
}

AtomicDir::AtomicDir(const std::string& dir) : dir_(dir), tmp_(tmp_name(dir)) {
  std::error_code ec;
  fs::remove_all(tmp_, ec);
  if (!fs::create_directories(tmp_, ec) || ec)
    fail(dir, "cannot create temporary output directory " + tmp_ + ": " + ec.message());
}

AtomicDir::~AtomicDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
}

void AtomicDir::commit() {
  std::error_code ec;
  if (fs::exists(dir_, ec)) {
    // Replace an existing output directory: move it aside first so a failure loses nothing.
    const std::string old = dir_ + ".old." + std::to_string(::getpid());
    fs::rename(dir_, old, ec);
    if (ec) fail(dir_, "cannot replace existing directory: " + ec.message());
    fs::rename(tmp_, dir_, ec);
    if (ec) {
      fs::rename(old, dir_);
      fail(dir_, "cannot move output into place: " + ec.message());
    }
    fs::remove_all(old, ec);
  } else {
    fs::rename(tmp_, dir_, ec);
    if (ec) fail(dir_, "cannot move output into place: " + ec.message());
  }
  committed_ = true;
}

}  // namespace lmpress
