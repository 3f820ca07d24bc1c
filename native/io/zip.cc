#include "io/zip.h"

#include "error.h"

namespace m2vla::io {
namespace {

constexpr uint64_t kLocalHeader = 0x04034b50, kCentralHeader = 0x02014b50, kEnd = 0x06054b50, kZip64End = 0x06064b50,
                   kZip64Locator = 0x07064b50;

// Little-endian fields read through one bounds check, so a truncated or corrupt archive fails with the file's name
// and never reads past the mapping.
struct Reader {
  const std::string& path;
  const MappedFile& file;

  uint64_t le(uint64_t off, unsigned n) const {
    if (off > file.size || n > file.size - off)
      fail(ErrorCode::Checkpoint, path, ": truncated or corrupt zip (a record at byte ", off, " runs past the end of the ",
           file.size, "-byte file)");
    uint64_t v = 0;
    for (unsigned i = n; i-- > 0;) v = (v << 8) | file.data[off + i];
    return v;
  }
};

template <typename... Parts>
[[noreturn]] void corrupt(const std::string& path, const Parts&... what) {
  fail(ErrorCode::Checkpoint, path, ": corrupt zip (", what..., ")");
}

// The end record is the last 22 bytes plus an optional comment (< 64 KiB): scan back for its signature and accept
// the candidate whose comment length reaches exactly the end of the file.
uint64_t find_end_record(const Reader& r) {
  const uint64_t size = r.file.size;
  if (size >= 22) {
    uint64_t lowest = size > 22 + 0xFFFF ? size - 22 - 0xFFFF : 0;
    for (uint64_t off = size - 22 + 1; off-- > lowest;)
      if (r.le(off, 4) == kEnd && off + 22 + r.le(off + 20, 2) == size) return off;
  }
  fail(ErrorCode::Checkpoint, r.path, ": not a zip archive, or truncated (no end-of-central-directory record)");
}

}  // namespace

ZipArchive open_zip(const std::string& path, std::shared_ptr<MappedFile> file) {
  Reader r{path, *file};
  const uint64_t end = find_end_record(r);
  uint64_t count = r.le(end + 10, 2), cd_size = r.le(end + 12, 4), cd_offset = r.le(end + 16, 4);
  uint64_t cd_limit = end;  // the central directory ends where the end records begin
  // zip64 (torch always writes it): a locator just before the end record points at a record with 64-bit fields.
  if (end >= 20 && r.le(end - 20, 4) == kZip64Locator) {
    uint64_t end64 = r.le(end - 20 + 8, 8);
    if (end64 > end - 20 || r.le(end64, 4) != kZip64End) corrupt(path, "bad zip64 end record");
    count = r.le(end64 + 32, 8), cd_size = r.le(end64 + 40, 8), cd_offset = r.le(end64 + 48, 8);
    cd_limit = end64;
  }
  if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset) corrupt(path, "central directory lies outside the file");
  const uint64_t cd_end = cd_offset + cd_size;

  ZipArchive zip{path, file, {}};
  uint64_t off = cd_offset;
  for (uint64_t i = 0; i < count; ++i) {
    if (cd_end - off < 46 || r.le(off, 4) != kCentralHeader)
      corrupt(path, "central directory entry ", i, " of ", count, " at byte ", off, " is damaged");
    const uint64_t flags = r.le(off + 8, 2), method = r.le(off + 10, 2), name_len = r.le(off + 28, 2),
                   extra_len = r.le(off + 30, 2), comment_len = r.le(off + 32, 2);
    uint64_t compressed = r.le(off + 20, 4), size = r.le(off + 24, 4), local = r.le(off + 42, 4);
    const uint64_t entry_len = 46 + name_len + extra_len + comment_len;
    if (entry_len > cd_end - off) corrupt(path, "central directory entry ", i, " runs past the directory");
    std::string name(reinterpret_cast<const char*>(file->data + off + 46), name_len);
    // zip64 extra field (id 1): 64-bit values for those of the three fields saturated at 0xFFFFFFFF, in this order.
    for (uint64_t x = off + 46 + name_len, x_end = x + extra_len; x_end - x >= 4;) {
      const uint64_t id = r.le(x, 2), len = r.le(x + 2, 2), field_end = x + 4 + len;
      if (field_end > x_end) corrupt(path, "entry '", name, "' has a damaged extra field");
      uint64_t f = x + 4;
      for (uint64_t* v : {&size, &compressed, &local}) {
        if (id != 1 || *v != 0xFFFFFFFF) continue;
        if (field_end - f < 8) corrupt(path, "entry '", name, "' has a short zip64 field");
        *v = r.le(f, 8);
        f += 8;
      }
      x = field_end;
    }
    if (flags & 1) fail(ErrorCode::Checkpoint, path, ": zip entry '", name, "' is encrypted");
    if (method != 0)
      fail(ErrorCode::Checkpoint, path, ": zip entry '", name, "' is compressed (method ", method,
           "); torch.save writes stored entries only, so re-save the checkpoint with torch.save");
    if (compressed != size) corrupt(path, "stored entry '", name, "' has two different sizes");
    // The local header repeats name and extra field (torch pads the extra field to align the data to 64 bytes);
    // the data follows it and must end before the central directory.
    if (local > cd_offset || r.le(local, 4) != kLocalHeader) corrupt(path, "entry '", name, "' has a damaged local header");
    const uint64_t data = local + 30 + r.le(local + 26, 2) + r.le(local + 28, 2);
    if (data > cd_offset || size > cd_offset - data) corrupt(path, "entry '", name, "' lies outside the file");
    zip.entries[name] = {data, size};
    off += entry_len;
  }
  return zip;
}

}  // namespace m2vla::io
