#include "transfer.h"

#include <ATen/ATen.h>

#include "error.h"

namespace m2vla {
namespace {

// Every part starts at a multiple of 64 bytes: any dtype's view is aligned, and so are vectorized loads on it.
constexpr int64_t kAlign = 64;

int64_t padded(int64_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

std::vector<int64_t> offsets_of(const std::vector<at::Tensor>& parts, int64_t& total) {
  std::vector<int64_t> offsets;
  total = 0;
  for (const at::Tensor& t : parts) {
    offsets.push_back(total);
    total += padded(t.numel() * int64_t(t.element_size()));
  }
  return offsets;
}

// The bytes [offset, offset + nbytes) of `buffer` seen as `like`'s dtype and shape.
at::Tensor view_as_part(const at::Tensor& buffer, int64_t offset, const at::Tensor& like) {
  return buffer.narrow(0, offset, like.numel() * int64_t(like.element_size())).view(like.scalar_type()).view(like.sizes());
}

at::Tensor byte_buffer(int64_t bytes, const c10::Device& device, bool pinned) {
  return at::empty({bytes}, at::TensorOptions().dtype(at::kByte).device(device).pinned_memory(pinned));
}

}  // namespace

std::vector<at::Tensor> to_device_packed(const std::vector<at::Tensor>& host, const c10::Device& device) {
  int64_t total = 0;
  const std::vector<int64_t> offsets = offsets_of(host, total);
  at::Tensor staging = byte_buffer(total, at::kCPU, device.is_cuda());
  for (size_t i = 0; i < host.size(); ++i) {
    if (!host[i].is_cpu()) fail(ErrorCode::Native, "to_device_packed: input ", i, " is not on the CPU");
    view_as_part(staging, offsets[i], host[i]).copy_(host[i]);
  }
  // From pinned memory the copy is asynchronous on the device's current stream: the kernels that read the views are
  // queued behind it on the same stream, and libtorch's pinned-memory allocator does not hand `staging`'s block out
  // again before the copy has finished.
  const at::Tensor moved = staging.to(device, /*non_blocking=*/true);
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < host.size(); ++i) out.push_back(view_as_part(moved, offsets[i], host[i]));
  return out;
}

std::vector<at::Tensor> to_host_packed(const std::vector<at::Tensor>& on_device) {
  if (on_device.empty()) return {};
  const c10::Device device = on_device.front().device();
  int64_t total = 0;
  const std::vector<int64_t> offsets = offsets_of(on_device, total);
  at::Tensor packed = byte_buffer(total, device, false);
  for (size_t i = 0; i < on_device.size(); ++i) {
    if (on_device[i].device() != device) fail(ErrorCode::Native, "to_host_packed: outputs on different devices");
    view_as_part(packed, offsets[i], on_device[i]).copy_(on_device[i]);
  }
  at::Tensor host = packed;
  if (!device.is_cpu()) {
    host = byte_buffer(total, at::kCPU, true);
    host.copy_(packed);  // synchronous: the caller reads the results next
  }
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < on_device.size(); ++i) out.push_back(view_as_part(host, offsets[i], on_device[i]));
  return out;
}

}  // namespace m2vla
