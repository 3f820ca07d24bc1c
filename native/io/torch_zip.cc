// torch.save's format: a zip whose `<archive>/data.pkl` pickles the state dict. Each tensor in it is
// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` and each storage a
// persistent id ('storage', torch.<Type>Storage, key, location, numel) naming the record `<archive>/data/<key>`.
//
// The unpickler below runs no code: it knows the opcodes a state dict uses and a fixed list of globals and builds
// plain values; any other global is refused by name (loading such a file with torch.load could execute it).
// Tensors are only described while unpickling and materialised at the end, when their names are known for errors.
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include <cstring>
#include <deque>
#include <unordered_map>

#include "error.h"
#include "io/mapped_file.h"
#include "io/state_dict.h"
#include "io/zip.h"

namespace m2vla::io {
namespace {

// Values live in one arena and refer to each other by index: no ownership cycles, no recursive destruction, however
// the pickle nests them.
using Ref = size_t;

enum class Global { OrderedDict, RebuildTensorV2, RebuildParameter, Storage };

struct TensorDesc {
  std::string key;  // storage record `<archive>/data/<key>`
  at::ScalarType dtype = at::kFloat;
  int64_t numel = 0;  // of the storage
  int64_t offset = 0;
  std::vector<int64_t> sizes, strides;
};

struct Value {
  enum class Kind { None, Bool, Int, Float, String, Tuple, List, Dict, Global, Storage, Tensor } kind;
  int64_t integer = 0;     // Bool, Int
  double real = 0;         // Float
  std::string string;      // String
  std::vector<Ref> items;  // Tuple, List; Dict as key, value, key, value, ...
  Global global{};         // Global (Storage: `tensor.dtype` holds its element type)
  TensorDesc tensor;       // Global Storage, Storage (key, dtype, numel), Tensor
};

const char* kind_name(Value::Kind k) {
  static const char* names[] = {"None",   "a bool", "an int",   "a float",   "a str",   "a tuple",
                                "a list", "a dict", "a global", "a storage", "a tensor"};
  return names[static_cast<int>(k)];
}

// The legacy storage classes torch.save names for every dtype we read (newer dtypes without one, such as uint16 or
// float8, are written as torch.storage.UntypedStorage + _rebuild_tensor_v3 and are refused as unknown globals).
const std::unordered_map<std::string, at::ScalarType>& storage_types() {
  static const std::unordered_map<std::string, at::ScalarType> types = {
      {"FloatStorage", at::kFloat}, {"DoubleStorage", at::kDouble}, {"HalfStorage", at::kHalf},
      {"BFloat16Storage", at::kBFloat16}, {"LongStorage", at::kLong}, {"IntStorage", at::kInt},
      {"CharStorage", at::kChar}, {"ByteStorage", at::kByte}, {"BoolStorage", at::kBool}};
  return types;
}

class Unpickler {
 public:
  // Whatever the opcodes, the values built stay within `budget_` bytes: a few hundred per tensor a state dict
  // holds, so a legitimate pickle stays far below it, while one of repeated 1-byte opcodes is stopped early.
  Unpickler(const std::string& path, const uint8_t* data, size_t size)
      : path_(path), data_(data), size_(size), budget_((64u << 20) + 16 * size) {}

  // Runs the pickle to its STOP and returns the top-level value.
  Ref run() {
    for (;;) {
      const size_t op_start = pos_;
      const uint8_t op = *take(1);
      switch (op) {
        case 0x80: {  // PROTO
          const uint8_t proto = *take(1);
          if (proto < 2 || proto > 5) corrupt("unsupported pickle protocol ", int(proto));
          break;
        }
        case 0x95: take(8); break;  // FRAME: only a read-ahead hint
        case '(': charge(sizeof(size_t)), marks_.push_back(stack_.size()); break;
        case '}': push(make(Value::Kind::Dict)); break;
        case ']': push(make(Value::Kind::List)); break;
        case ')': push(make(Value::Kind::Tuple)); break;
        case 'N': push(make(Value::Kind::None)); break;
        case 0x88: push(make_int(Value::Kind::Bool, 1)); break;  // NEWTRUE
        case 0x89: push(make_int(Value::Kind::Bool, 0)); break;  // NEWFALSE
        case 'K': push(make_int(Value::Kind::Int, int64_t(le(1)))); break;
        case 'M': push(make_int(Value::Kind::Int, int64_t(le(2)))); break;
        case 'J': push(make_int(Value::Kind::Int, int32_t(le(4)))); break;
        case 0x8a: {  // LONG1: n-byte little-endian two's complement
          const size_t n = le(1);
          if (n > 8) corrupt("integer of ", n, " bytes");
          uint64_t v = le(n);
          if (n > 0 && n < 8 && (v >> (8 * n - 1))) v |= ~uint64_t(0) << (8 * n);
          push(make_int(Value::Kind::Int, int64_t(v)));
          break;
        }
        case 'G': {  // BINFLOAT: big-endian double
          const uint8_t* b = take(8);
          uint64_t bits = 0;
          for (int i = 0; i < 8; ++i) bits = (bits << 8) | b[i];
          Ref v = make(Value::Kind::Float);
          std::memcpy(&heap_[v].real, &bits, 8);
          push(v);
          break;
        }
        case 'X': push(make_string(le(4))); break;     // BINUNICODE
        case 0x8d: push(make_string(le(8))); break;    // BINUNICODE8
        case 0x8c: push(make_string(le(1))); break;    // SHORT_BINUNICODE
        case 't': push(make_tuple(pop_mark())); break;
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
          std::vector<Ref> items(op - 0x84);
          for (size_t i = items.size(); i-- > 0;) items[i] = pop();
          push(make_tuple(std::move(items)));
          break;
        }
        case 'q': remember(le(1), top()); break;           // BINPUT
        case 'r': remember(le(4), top()); break;           // LONG_BINPUT
        case 0x94: remember(memo_.size(), top()); break;   // MEMOIZE
        case 'h': push(memo(le(1))); break;                // BINGET
        case 'j': push(memo(le(4))); break;                // LONG_BINGET
        case 'c': {  // GLOBAL "module\nname\n"
          std::string module = line();
          push(make_global(module, line()));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          Ref name = pop(), module = pop();
          push(make_global(str(module, "STACK_GLOBAL"), str(name, "STACK_GLOBAL")));
          break;
        }
        case 'Q': push(persistent_load(pop())); break;  // BINPERSID
        case 'R': {                                       // REDUCE
          Ref args = pop(), fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 'b': {  // BUILD: only OrderedDict's state ({'_metadata': module versions}), which a state dict ignores
          pop();
          expect(top(), Value::Kind::Dict, "BUILD");
          break;
        }
        case 's': {  // SETITEM
          Ref v = pop(), k = pop();
          append(top(), Value::Kind::Dict, {k, v}, "SETITEM");
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<Ref> kv = pop_mark();
          if (kv.size() % 2) corrupt("SETITEMS with an odd number of items");
          append(top(), Value::Kind::Dict, kv, "SETITEMS");
          break;
        }
        case 'a': {  // APPEND
          Ref v = pop();
          append(top(), Value::Kind::List, {v}, "APPEND");
          break;
        }
        case 'e': {  // APPENDS
          std::vector<Ref> vs = pop_mark();
          append(top(), Value::Kind::List, vs, "APPENDS");
          break;
        }
        case '.': {  // STOP
          Ref result = pop();
          if (!stack_.empty() || !marks_.empty()) corrupt("values left on the stack at STOP");
          return result;
        }
        default:
          pos_ = op_start;
          corrupt("unsupported pickle opcode 0x", std::hex, int(op), std::dec);
      }
    }
  }

  const Value& operator[](Ref r) const { return heap_[r]; }

 private:
  template <typename... Parts>
  [[noreturn]] void corrupt(const Parts&... what) const {
    fail(ErrorCode::Checkpoint, path_, ": corrupt data.pkl (", what..., " at byte ", pos_, ")");
  }

  const uint8_t* take(size_t n) {
    if (n > size_ - pos_) corrupt("truncated: ", n, " more bytes needed");
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint64_t le(size_t n) {
    const uint8_t* b = take(n);
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = (v << 8) | b[i];
    return v;
  }
  std::string line() {
    const uint8_t* begin = data_ + pos_;
    const void* nl = std::memchr(begin, '\n', size_ - pos_);
    if (!nl) corrupt("unterminated GLOBAL");
    std::string s(reinterpret_cast<const char*>(begin), static_cast<const uint8_t*>(nl) - begin);
    pos_ += s.size() + 1;
    return s;
  }

  void charge(size_t bytes) {
    if (bytes > budget_) corrupt("builds more values than a state dict of ", size_, " bytes needs");
    budget_ -= bytes;
  }

  Ref make(Value::Kind kind) {
    charge(sizeof(Value));
    heap_.push_back(Value{kind});
    return heap_.size() - 1;
  }
  Ref make_int(Value::Kind kind, int64_t v) {
    Ref r = make(kind);
    heap_[r].integer = v;
    return r;
  }
  Ref make_string(uint64_t n) {
    if (n > size_ - pos_) corrupt("truncated string of ", n, " bytes");
    charge(n);
    Ref r = make(Value::Kind::String);
    heap_[r].string.assign(reinterpret_cast<const char*>(take(n)), n);
    return r;
  }
  Ref make_tuple(std::vector<Ref> items) {
    charge(items.size() * sizeof(Ref));
    Ref r = make(Value::Kind::Tuple);
    heap_[r].items = std::move(items);
    return r;
  }

  void push(Ref r) {
    charge(sizeof(Ref));
    stack_.push_back(r);
  }
  void remember(uint64_t i, Ref r) {
    charge(64);  // an unordered_map node
    memo_[i] = r;
  }
  Ref top() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) corrupt("stack underflow");
    return stack_.back();
  }
  Ref pop() {
    Ref r = top();
    stack_.pop_back();
    return r;
  }
  std::vector<Ref> pop_mark() {
    if (marks_.empty()) corrupt("no MARK to pop to");
    std::vector<Ref> items(stack_.begin() + marks_.back(), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  Ref memo(uint64_t i) {
    auto it = memo_.find(i);
    if (it == memo_.end()) corrupt("memo entry ", i, " was never stored");
    return it->second;
  }

  const Value& expect(Ref r, Value::Kind kind, const char* what) const {
    if (heap_[r].kind != kind) corrupt(what, ": expected ", kind_name(kind), ", got ", kind_name(heap_[r].kind));
    return heap_[r];
  }
  const std::string& str(Ref r, const char* what) const { return expect(r, Value::Kind::String, what).string; }
  int64_t integer(Ref r, const char* what) const { return expect(r, Value::Kind::Int, what).integer; }
  std::vector<int64_t> int_tuple(Ref r, const char* what) const {
    std::vector<int64_t> out;
    for (Ref i : expect(r, Value::Kind::Tuple, what).items) out.push_back(integer(i, what));
    return out;
  }
  void append(Ref target, Value::Kind kind, const std::vector<Ref>& items, const char* what) {
    expect(target, kind, what);
    charge(items.size() * sizeof(Ref));
    auto& dst = heap_[target].items;
    dst.insert(dst.end(), items.begin(), items.end());
  }

  Ref make_global(const std::string& module, const std::string& name) {
    Ref r = make(Value::Kind::Global);
    Value& g = heap_[r];
    auto storage = storage_types().find(name);
    if (module == "collections" && name == "OrderedDict") g.global = Global::OrderedDict;
    else if (module == "torch._utils" && name == "_rebuild_tensor_v2") g.global = Global::RebuildTensorV2;
    else if (module == "torch._utils" && name == "_rebuild_parameter") g.global = Global::RebuildParameter;
    else if (module == "torch" && storage != storage_types().end()) g.global = Global::Storage, g.tensor.dtype = storage->second;
    else
      fail(ErrorCode::Checkpoint, path_, ": refusing pickle global '", module, ".", name,
           "' (a state dict may use only collections.OrderedDict, torch._utils._rebuild_tensor_v2, "
           "torch._utils._rebuild_parameter and torch.<Type>Storage)");
    return r;
  }

  // ('storage', torch.<Type>Storage, key, location, numel). The location (cpu, cuda:0, ...) is ignored: the
  // bytes are read into CPU memory either way.
  Ref persistent_load(Ref pid) {
    const auto& t = expect(pid, Value::Kind::Tuple, "a persistent id").items;
    if (t.size() != 5 || heap_[t[0]].kind != Value::Kind::String || heap_[t[0]].string != "storage")
      corrupt("persistent id is not ('storage', type, key, location, numel)");
    const Value& type = expect(t[1], Value::Kind::Global, "a storage type");
    if (type.global != Global::Storage) corrupt("persistent id names a non-storage type");
    Ref r = make(Value::Kind::Storage);
    heap_[r].tensor = {str(t[2], "a storage key"), type.tensor.dtype, integer(t[4], "a storage size")};
    return r;
  }

  Ref reduce(Ref fn, Ref args_ref) {
    const Value& f = expect(fn, Value::Kind::Global, "REDUCE");
    const std::vector<Ref> args = expect(args_ref, Value::Kind::Tuple, "REDUCE arguments").items;
    switch (f.global) {
      case Global::OrderedDict:
        if (!args.empty()) corrupt("OrderedDict called with arguments");
        return make(Value::Kind::Dict);
      case Global::RebuildTensorV2: {
        // (storage, offset, size, stride, requires_grad, backward_hooks): autograd state does not matter here.
        if (args.size() != 6) corrupt("_rebuild_tensor_v2 with ", args.size(), " arguments (expected 6)");
        TensorDesc d = expect(args[0], Value::Kind::Storage, "_rebuild_tensor_v2").tensor;
        d.offset = integer(args[1], "a storage offset");
        d.sizes = int_tuple(args[2], "a tensor size");
        d.strides = int_tuple(args[3], "a tensor stride");
        Ref r = make(Value::Kind::Tensor);
        heap_[r].tensor = std::move(d);
        return r;
      }
      case Global::RebuildParameter:  // (tensor, requires_grad, backward_hooks): a Parameter is its tensor
        if (args.size() != 3) corrupt("_rebuild_parameter with ", args.size(), " arguments (expected 3)");
        expect(args[0], Value::Kind::Tensor, "_rebuild_parameter");
        return args[0];
      case Global::Storage:
        corrupt("a storage type called directly");
    }
    corrupt("unknown global");
  }

  const std::string& path_;
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  size_t budget_;
  std::deque<Value> heap_;  // a deque keeps references stable while values are added
  std::vector<Ref> stack_;
  std::vector<size_t> marks_;  // stack heights at each open MARK
  std::unordered_map<uint64_t, Ref> memo_;
};

std::string dims(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// Copies the view a tensor describes out of its storage record into memory the tensor owns. The record must hold
// exactly the storage, and every element the view touches must lie inside it.
at::Tensor materialize(const ZipArchive& zip, const std::string& archive, const std::string& name, const TensorDesc& d) {
  auto bad = [&](const auto&... why) { fail(ErrorCode::Checkpoint, zip.path, ": tensor '", name, "' ", why...); };
  const std::string record = archive + "data/" + d.key;
  auto it = zip.entries.find(record);
  if (it == zip.entries.end()) bad("has no storage record '", record, "'");
  const uint64_t elem = c10::elementSize(d.dtype), bytes = it->second.size;
  if (d.numel < 0 || bytes % elem != 0 || bytes / elem != uint64_t(d.numel))
    bad("expects ", d.numel, " ", c10::toString(d.dtype), " elements in '", record, "', which holds ", bytes, " bytes");
  if (d.sizes.size() != d.strides.size()) bad("has ", d.sizes.size(), " sizes but ", d.strides.size(), " strides");

  bool empty = false;
  for (size_t i = 0; i < d.sizes.size(); ++i) {
    if (d.sizes[i] < 0 || d.strides[i] < 0) bad("has a negative size or stride");
    empty = empty || d.sizes[i] == 0;
  }
  // The copy below holds numel(view) elements, which stride 0 lets exceed the storage: a 4-byte record declared
  // [16384, 16384] would expand to 1 GiB. torch.save does write small expanded views; none is larger than the file.
  uint64_t view_bytes = elem;
  for (size_t i = 0; !empty && i < d.sizes.size(); ++i) {
    if (uint64_t(d.sizes[i]) > zip.file->size / view_bytes)
      bad("declares size ", dims(d.sizes), ", more bytes than the whole file (", zip.file->size, ") holds");
    view_bytes *= uint64_t(d.sizes[i]);
  }
  // `last` is the highest element index the view reads; each step is checked before it is added, so no overflow.
  int64_t last = d.offset;
  bool inside = d.offset >= 0 && d.offset <= d.numel && (empty || d.offset < d.numel);
  for (size_t i = 0; inside && !empty && i < d.sizes.size(); ++i) {
    if (d.strides[i] > 0 && d.sizes[i] - 1 > (d.numel - 1 - last) / d.strides[i]) inside = false;
    else last += (d.sizes[i] - 1) * d.strides[i];
  }
  if (!inside)
    bad("(offset ", d.offset, ", size ", dims(d.sizes), ", stride ", dims(d.strides), ") reads outside its storage of ",
        d.numel, " elements");
  const auto options = at::TensorOptions().dtype(d.dtype);
  auto* ptr = const_cast<uint8_t*>(zip.data(it->second));
  at::Tensor storage;
  if (reinterpret_cast<uintptr_t>(ptr) % elem == 0) {
    storage = at::from_blob(ptr, {d.numel}, options);  // the mapping outlives this function; the clone owns the copy
  } else {  // other zip writers may not align records: copy out first
    storage = at::empty({d.numel}, options);
    std::memcpy(storage.data_ptr(), ptr, bytes);
  }
  return storage.as_strided(d.sizes, d.strides, d.offset).clone(at::MemoryFormat::Contiguous);
}

}  // namespace

StateDict load_torch_zip(const std::string& path) {
  auto file = map_file(path);
  // Before torch 1.6, torch.save wrote a bare pickle stream (it starts with PROTO 2); it cannot be read safely.
  if (file->size >= 2 && file->data[0] == 0x80 && file->data[1] == 0x02)
    fail(ErrorCode::Checkpoint, path, ": legacy (pre-1.6) torch.save format; re-save it with a current torch.save or as safetensors");
  ZipArchive zip = open_zip(path, file);

  // The records sit in one top-level folder named after the file torch.save wrote to: "<archive>/data.pkl".
  std::string archive;
  for (const auto& [name, entry] : zip.entries)
    if (name.size() > 9 && name.compare(name.size() - 9, 9, "/data.pkl") == 0 && name.find('/') == name.size() - 9)
      archive = name.substr(0, name.size() - 8);
  if (archive.empty()) fail(ErrorCode::Checkpoint, path, ": no '<archive>/data.pkl' record (not a torch.save file)");
  if (auto bo = zip.entries.find(archive + "byteorder"); bo != zip.entries.end()) {
    std::string order(reinterpret_cast<const char*>(zip.data(bo->second)), bo->second.size);
    if (order != "little") fail(ErrorCode::Checkpoint, path, ": byte order '", order, "' is not supported (little-endian only)");
  }

  const ZipEntry& pkl = zip.entries.at(archive + "data.pkl");
  Unpickler unpickler(path, zip.data(pkl), pkl.size);
  const Value& root = unpickler[unpickler.run()];
  if (root.kind != Value::Kind::Dict) fail(ErrorCode::Checkpoint, path, ": not a state dict (data.pkl holds ", kind_name(root.kind), ")");

  StateDict sd;
  sd.source = path;
  for (size_t i = 0; i < root.items.size(); i += 2) {
    const Value& key = unpickler[root.items[i]];
    const Value& value = unpickler[root.items[i + 1]];
    if (key.kind != Value::Kind::String) fail(ErrorCode::Checkpoint, path, ": not a state dict (a key is ", kind_name(key.kind), ")");
    if (value.kind != Value::Kind::Tensor)
      fail(ErrorCode::Checkpoint, path, ": entry '", key.string, "' is not a tensor (found ", kind_name(value.kind), ")");
    sd.tensors[key.string] = materialize(zip, archive, key.string, value.tensor);
    check_finite(path, key.string, sd.tensors[key.string]);
  }
  return sd;
}

}  // namespace m2vla::io
