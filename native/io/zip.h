// The part of the zip format torch.save writes: stored (uncompressed) entries, zip64 end records. Only the central
// directory is trusted for sizes (torch sets the data-descriptor flag, so local headers may hold zeros); every
// offset is checked against the file. Anything else (compression, encryption, multi-disk) is an E_CHECKPOINT error.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "io/mapped_file.h"

namespace m2vla::io {

struct ZipEntry {
  uint64_t offset = 0;  // of the entry's bytes in the file
  uint64_t size = 0;
};

struct ZipArchive {
  std::string path;
  std::shared_ptr<MappedFile> file;
  std::map<std::string, ZipEntry> entries;

  const uint8_t* data(const ZipEntry& e) const { return file->data + e.offset; }
};

// `file` is the mapping of `path` (named in errors); entries point into it.
ZipArchive open_zip(const std::string& path, std::shared_ptr<MappedFile> file);

}  // namespace m2vla::io
