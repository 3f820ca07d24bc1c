#include "addon/addon.h"

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  m2vla::addon::init_runtime(env, exports);
  m2vla::addon::init_checkpoint(env, exports);
  m2vla::addon::init_preprocess(env, exports);
  m2vla::addon::init_head(env, exports);
  m2vla::addon::init_memory_bank(env, exports);
  m2vla::addon::init_diffusion(env, exports);
  m2vla::addon::init_backbone(env, exports);
  m2vla::addon::init_policy(env, exports);
  m2vla::addon::init_kernels(env, exports);
  m2vla::addon::init_trainer(env, exports);
  m2vla::addon::init_run_dir(env, exports);
  return exports;
}
}  // namespace

NODE_API_MODULE(m2vla, Init)
