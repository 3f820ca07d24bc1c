// JS configuration objects copied into the plain C++ structs, on the JS thread. The BackboneConfig (lib/config.ts,
// already validated there): a missing or mistyped field is a programming error between lib/ and native/, E_CONFIG
// naming the field. Head options come from users (createHead): E_INPUT.
#pragma once
#include <napi.h>

#include "device.h"
#include "head/config.h"
#include "model/config.h"

namespace m2vla::addon {

model::BackboneConfig backbone_config_from_js(const Napi::Value& v);

// {config: NativeHeadConfig, dtype?, device?} of createHead (and the trainer's head options); E_INPUT naming the field.
head::HeadOptions head_options_from_js(const Napi::Object& o);
// `ablation`: "none", "no-mol", "no-msm" (TypeScript fills the default; the enum names are mapped, nothing decided).
head::Ablation ablation_from_js(const Napi::Object& o);

// {device?: 'cpu' | 'cuda[:N]' (default 'cpu'), dtype?: 'auto' | 'float32' | 'bfloat16' | 'float16' | 'int8' (default
// 'float32')} resolved against this build and machine (device.h): E_INPUT for a bad string, E_CONFIG for a device
// or dtype this build or GPU cannot run.
Placement placement_from_js(const Napi::Object& o, const CpuMatrixFeatures& cpu = cpu_matrix_features());

}  // namespace m2vla::addon
