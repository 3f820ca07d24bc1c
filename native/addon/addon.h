// Each Addon*.cc registers its functions/classes on the exports object; addon.cc calls them all.
#pragma once
#include <napi.h>

namespace m2vla::addon {
void init_runtime(Napi::Env env, Napi::Object exports);
void init_checkpoint(Napi::Env env, Napi::Object exports);
void init_preprocess(Napi::Env env, Napi::Object exports);
void init_head(Napi::Env env, Napi::Object exports);
void init_memory_bank(Napi::Env env, Napi::Object exports);
void init_diffusion(Napi::Env env, Napi::Object exports);
void init_backbone(Napi::Env env, Napi::Object exports);
void init_policy(Napi::Env env, Napi::Object exports);
void init_kernels(Napi::Env env, Napi::Object exports);
void init_trainer(Napi::Env env, Napi::Object exports);
void init_run_dir(Napi::Env env, Napi::Object exports);
}  // namespace m2vla::addon
