// The JS BackboneConfig (lib/config.ts, already validated there) copied into the plain C++ struct, on the JS thread.
// A missing or mistyped field is a programming error between lib/ and native/: E_CONFIG naming the field.
#pragma once
#include <napi.h>

#include "model/config.h"

namespace m2vla::addon {

model::BackboneConfig backbone_config_from_js(const Napi::Value& v);

}  // namespace m2vla::addon
