#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "error.h"

namespace m2vla::io {

MappedFile::~MappedFile() {
  if (data) munmap(data, size);
}

void MappedFile::release(const void* p, size_t n) const {
  const auto page = uintptr_t(sysconf(_SC_PAGESIZE));
  const auto lo = std::max(uintptr_t(p), uintptr_t(data)), hi = std::min(uintptr_t(p) + n, uintptr_t(data) + size);
  const uintptr_t begin = (lo + page - 1) / page * page, end = hi / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

std::shared_ptr<MappedFile> map_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO planted in a run directory must not wait for a writer; it is refused below.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail(ErrorCode::Checkpoint, path, ": cannot open (", std::strerror(errno), ")");
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail(ErrorCode::Checkpoint, path, ": cannot stat (", std::strerror(err), ")");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(ErrorCode::Checkpoint, path, ": not a regular file");
  }
  auto m = std::make_shared<MappedFile>();
  if (st.st_size > 0) {
    void* addr = mmap(nullptr, size_t(st.st_size), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    int err = errno;
    ::close(fd);
    if (addr == MAP_FAILED) fail(ErrorCode::Checkpoint, path, ": mmap failed (", std::strerror(err), ")");
    m->data = static_cast<uint8_t*>(addr);
    m->size = size_t(st.st_size);
  } else {
    ::close(fd);
  }
  return m;
}

}  // namespace m2vla::io
