// One copy each way between the host and a policy's device. An act() has several small inputs (pixel values, prompt
// ids, the normalized state) and outputs (the chunk, the retrieval rows, the query keys); copied one by one, each
// would be a separate host<->device transfer with its own latency and synchronization. Instead they are packed into
// one byte buffer (page-locked on CUDA, so the copy is a DMA that needs no staging) and moved at once; the results
// are views of the moved buffer with the original dtypes and shapes. On the CPU the same code runs and the "copy"
// is the identity, so the packing is exercised by every CPU test. No N-API here.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <vector>

namespace m2vla {

// Host tensors (any dtypes, contiguous or not) -> views of one buffer on `device`, in the same order.
std::vector<at::Tensor> to_device_packed(const std::vector<at::Tensor>& host, const c10::Device& device);

// Tensors on one device -> views of one host buffer (pinned when they come from a GPU), in the same order.
std::vector<at::Tensor> to_host_packed(const std::vector<at::Tensor>& on_device);

}  // namespace m2vla
