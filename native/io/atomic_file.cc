#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "error.h"
#include "io/write.h"

namespace m2vla::io {

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
  file_ = std::fopen(tmp_.c_str(), "wb");
  if (!file_) fail(ErrorCode::Checkpoint, tmp_, ": cannot create (", std::strerror(errno), ")");
}

AtomicFile::~AtomicFile() {
  if (!file_) return;
  std::fclose(file_);
  std::remove(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t bytes) {
  if (bytes && std::fwrite(data, 1, bytes, file_) != bytes)
    fail(ErrorCode::Checkpoint, tmp_, ": write failed (", std::strerror(errno), ")");
  offset_ += bytes;
}

void AtomicFile::commit() {
  if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0)
    fail(ErrorCode::Checkpoint, tmp_, ": flush failed (", std::strerror(errno), ")");
  std::FILE* f = file_;
  file_ = nullptr;
  if (std::fclose(f) != 0) {
    std::remove(tmp_.c_str());
    fail(ErrorCode::Checkpoint, tmp_, ": close failed (", std::strerror(errno), ")");
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp_.c_str());
    fail(ErrorCode::Checkpoint, path_, ": cannot replace (", std::strerror(err), ")");
  }
  sync_directory(std::filesystem::path(path_).parent_path().string());
}

void write_text(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

void sync_directory(const std::string& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) fail(ErrorCode::Checkpoint, dir, ": cannot open the directory (", std::strerror(errno), ")");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) fail(ErrorCode::Checkpoint, dir, ": fsync failed (", std::strerror(errno), ")");
}

}  // namespace m2vla::io
