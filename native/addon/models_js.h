// The loaded models behind the JS Backbone and Head objects, for addon code that composes them (the policy), and
// the head's output as JS (shared by head.forward() and policy.act()). Objects are recognised by a type tag, so a
// wrong object is an E_INPUT error, never a crash.
#pragma once
#include <napi.h>

#include <memory>
#include <shared_mutex>

#include "head/action_head.h"
#include "model/prismatic.h"

namespace m2vla::addon {

std::shared_ptr<const model::Backbone> backbone_from_js(const Napi::Value& v, const char* what);
std::shared_ptr<const head::ActionHead> head_from_js(const Napi::Value& v, const char* what);

// Worker thread: make the output tensors float32 and contiguous so the JS thread only copies bytes.
void prepare_head_output(head::HeadForwardOutput& out);
// JS thread: {normalized, shape, retrieval: {indices, similarities, values, queryKeys}, intermediates?}.
Napi::Object head_output_to_js(Napi::Env env, const head::HeadForwardOutput& out);

// Promise<{keys, values, size}>: a copy of an MSM bank's buffers (every row, bfloat16) made on a worker thread, for
// bank.snapshot() and head.memoryBank(). `mutex` (may be null) is held shared while copying.
Napi::Value start_bank_snapshot(Napi::Env env, int threads, std::shared_ptr<const head::MemoryBank> bank,
                                std::shared_mutex* mutex);

}  // namespace m2vla::addon
