// write_torch_zip: the file torch.save(OrderedDict(tensors), path) writes, built by hand (see io/write.h).
//
// data.pkl, protocol 2, per tensor (the same opcodes torch's pickler emits, minus the memo):
//   name: torch._utils._rebuild_tensor_v2(BINPERSID(('storage', torch.<Type>Storage, '<key>', 'cpu', numel)),
//                                         0, size, stride, False, collections.OrderedDict())
// inside collections.OrderedDict() filled by one SETITEMS. Each tensor owns a contiguous storage record
// `archive/data/<key>`; records are stored uncompressed with their data aligned to 64 bytes through an extra field
// of padding, as torch's writer does, and carry their CRC-32 (torch's reader checks it).
#include <ATen/core/Tensor.h>

#include <array>
#include <cstring>
#include <limits>

#include "error.h"
#include "io/atomic_file.h"
#include "io/write.h"

namespace m2vla::io {
namespace {

constexpr uint64_t kAlignment = 64;
constexpr uint16_t kPaddingFieldId = 0x4246;  // "FB", torch's padding extra field

uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

const char* storage_type(const std::string& path, const std::string& name, at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "FloatStorage";
    case at::kBFloat16: return "BFloat16Storage";
    case at::kHalf: return "HalfStorage";
    case at::kDouble: return "DoubleStorage";
    case at::kLong: return "LongStorage";
    case at::kInt: return "IntStorage";
    case at::kByte: return "ByteStorage";
    case at::kChar: return "CharStorage";
    case at::kBool: return "BoolStorage";
    default: fail(ErrorCode::Checkpoint, path, ": tensor '", name, "' has dtype ", c10::toString(t), ", which torch.save storages cannot hold");
  }
}

class Pickle {
 public:
  void proto() { bytes_ += "\x80\x02"; }
  void global(const std::string& module, const std::string& name) { bytes_ += "c" + module + "\n" + name + "\n"; }
  void mark() { bytes_ += '('; }
  void tuple() { bytes_ += 't'; }
  void empty_tuple() { bytes_ += ')'; }
  void reduce() { bytes_ += 'R'; }
  void persistent_id() { bytes_ += 'Q'; }
  void set_items() { bytes_ += 'u'; }
  void stop() { bytes_ += '.'; }
  void boolean(bool v) { bytes_ += v ? '\x88' : '\x89'; }
  void string(const std::string& s) {
    bytes_ += 'X';
    le(s.size(), 4);
    bytes_ += s;
  }
  void integer(int64_t v) {
    if (v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max()) {
      bytes_ += 'J';
      le(uint64_t(v), 4);
    } else {
      bytes_ += '\x8a';  // LONG1, 8 bytes two's complement
      bytes_ += '\x08';
      le(uint64_t(v), 8);
    }
  }
  void int_tuple(at::IntArrayRef values) {
    if (values.empty()) return empty_tuple();
    mark();
    for (int64_t v : values) integer(v);
    tuple();
  }
  const std::string& bytes() const { return bytes_; }

 private:
  void le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes_ += char((v >> (8 * i)) & 0xFF);
  }
  std::string bytes_;
};

struct Record {
  std::string name;
  const uint8_t* data;
  uint64_t size;
  uint32_t crc = 0;
  uint64_t header_offset = 0;
};

class ZipWriter {
 public:
  explicit ZipWriter(const std::string& path) : path_(path), file_(path) {}

  void add(Record r) {
    r.crc = crc32(r.data, r.size);
    r.header_offset = file_.offset();
    // Pad the local header's extra field so the data starts on a 64-byte boundary (a field is at least 4 bytes).
    const uint64_t fixed = 30 + r.name.size() + 4;
    const uint64_t padding = (kAlignment - (r.header_offset + fixed) % kAlignment) % kAlignment;
    std::string h;
    put(h, 0x04034b50, 4);
    put(h, 20, 2);  // version needed
    put(h, 0, 2);   // flags
    put(h, 0, 2);   // stored
    put(h, 0, 2);   // time
    put(h, 0x21, 2);  // date: 1980-01-01
    put(h, r.crc, 4);
    put(h, checked(r.size), 4);
    put(h, checked(r.size), 4);
    put(h, r.name.size(), 2);
    put(h, 4 + padding, 2);
    h += r.name;
    put(h, kPaddingFieldId, 2);
    put(h, padding, 2);
    h.append(padding, 'Z');
    file_.write(h.data(), h.size());
    file_.write(r.data, r.size);
    records_.push_back(std::move(r));
  }

  void finish() {
    if (records_.size() > 0xFFFF) fail(ErrorCode::Checkpoint, path_, ": more than 65535 records (zip64 is not written)");
    const uint64_t cd_offset = file_.offset();
    std::string cd;
    for (const Record& r : records_) {
      put(cd, 0x02014b50, 4);
      put(cd, 20, 2);  // version made by
      put(cd, 20, 2);  // version needed
      put(cd, 0, 2);
      put(cd, 0, 2);
      put(cd, 0, 2);
      put(cd, 0x21, 2);
      put(cd, r.crc, 4);
      put(cd, checked(r.size), 4);
      put(cd, checked(r.size), 4);
      put(cd, r.name.size(), 2);
      put(cd, 0, 2);  // extra
      put(cd, 0, 2);  // comment
      put(cd, 0, 2);  // disk
      put(cd, 0, 2);  // internal attributes
      put(cd, 0, 4);  // external attributes
      put(cd, checked(r.header_offset), 4);
      cd += r.name;
    }
    std::string end;
    put(end, 0x06054b50, 4);
    put(end, 0, 2);
    put(end, 0, 2);
    put(end, records_.size(), 2);
    put(end, records_.size(), 2);
    put(end, checked(cd.size()), 4);
    put(end, checked(cd_offset), 4);
    put(end, 0, 2);
    file_.write(cd.data(), cd.size());
    file_.write(end.data(), end.size());
    file_.commit();
  }

 private:
  static void put(std::string& s, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) s += char((v >> (8 * i)) & 0xFF);
  }
  uint64_t checked(uint64_t v) const {
    if (v >= 0xFFFFFFFFu)
      fail(ErrorCode::Checkpoint, path_, ": over 4 GiB, which needs zip64 (not written); use the .safetensors export");
    return v;
  }

  std::string path_;
  AtomicFile file_;
  std::vector<Record> records_;
};

}  // namespace

void write_torch_zip(const std::string& path, const NamedTensors& tensors) {
  const std::string archive = "archive/";
  std::vector<at::Tensor> storages;
  Pickle p;
  p.proto();
  p.global("collections", "OrderedDict");
  p.empty_tuple();
  p.reduce();
  p.mark();
  for (const auto& [name, tensor] : tensors) {
    at::Tensor t = tensor.detach().cpu().contiguous();
    const std::string key = std::to_string(storages.size());
    p.string(name);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.mark();
    p.mark();
    p.string("storage");
    p.global("torch", storage_type(path, name, t.scalar_type()));
    p.string(key);
    p.string("cpu");
    p.integer(t.numel());
    p.tuple();
    p.persistent_id();
    p.integer(0);  // storage offset
    p.int_tuple(t.sizes());
    p.int_tuple(t.strides());
    p.boolean(false);  // requires_grad
    p.global("collections", "OrderedDict");  // backward hooks
    p.empty_tuple();
    p.reduce();
    p.tuple();
    p.reduce();
    storages.push_back(std::move(t));
  }
  p.set_items();
  p.stop();

  static const std::string kByteOrder = "little", kVersion = "3\n";
  auto text = [](const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); };
  ZipWriter zip(path);
  zip.add({archive + "data.pkl", text(p.bytes()), p.bytes().size()});
  zip.add({archive + "byteorder", text(kByteOrder), kByteOrder.size()});
  for (size_t i = 0; i < storages.size(); ++i) {
    const at::Tensor& t = storages[i];
    zip.add({archive + "data/" + std::to_string(i), static_cast<const uint8_t*>(t.data_ptr()), uint64_t(t.numel() * t.element_size())});
  }
  zip.add({archive + "version", text(kVersion), kVersion.size()});
  zip.finish();
}

}  // namespace m2vla::io
