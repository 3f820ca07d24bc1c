// One file being written as "<path>.tmp": commit() flushes it to disk and renames it over <path>; destroyed
// uncommitted (an error on the way), the temporary file is removed.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>

namespace m2vla::io {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  void write(const void* data, size_t bytes);
  uint64_t offset() const { return offset_; }
  void commit();

 private:
  std::string path_, tmp_;
  std::FILE* file_ = nullptr;
  uint64_t offset_ = 0;
};

}  // namespace m2vla::io
