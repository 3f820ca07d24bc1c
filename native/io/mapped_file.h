// A whole file mapped privately (copy-on-write) into memory. Checkpoint readers hand out tensors that view the
// mapping; each such tensor holds the shared_ptr, so the file stays mapped exactly as long as a view is alive.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace m2vla::io {

struct MappedFile {
  uint8_t* data = nullptr;  // writable because from_blob wants a non-const pointer; writes never reach the file
  size_t size = 0;
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  // Drops this process's mapping of the pages wholly inside [p, p + n) (MADV_DONTNEED): they leave the resident set,
  // and the next read maps them again from the page cache (from the file if the cache let them go). Only for pages
  // never written: a private mapping's written page would read back as the file's.
  void release(const void* p, size_t n) const;
};

// E_CHECKPOINT "<path>: cannot open (...)" when the file cannot be opened or mapped.
std::shared_ptr<MappedFile> map_file(const std::string& path);

}  // namespace m2vla::io
