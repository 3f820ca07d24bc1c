// A run directory resolved once, in C++: config.json (+ manifest.json of tiny fixtures), preprocessor_config.json,
// dataset_statistics.json, the checkpoint file names and the recorded ablation, turned into the one spec the models
// are built from. The same rules as lib/config.ts readRunConfig + lib/head.ts loadHead (which the addon still uses;
// moving TypeScript onto this spec is the rest of issue #17's "validation once"). Used by the C++ tests, the bench
// tool and the GPU acceptance run, which have no Node. Errors are E_CONFIG / E_CHECKPOINT naming the file and key.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "device.h"
#include "head/config.h"
#include "head/normalize.h"
#include "model/config.h"
#include "model/preprocess.h"

namespace m2vla {

class Policy;

struct RunDirOverrides {
  std::optional<int64_t> num_images;                     // cameras, when the directory does not say (default 2)
  std::optional<std::vector<int64_t>> key_layer_indices;  // MSM key layers (default manifest's or [3, 11, 23])
  std::optional<std::string> unnorm_key;                  // dataset_statistics.json entry (required with several)
};

struct RunSpec {
  std::string dir;
  model::BackboneConfig backbone;
  model::PreprocessOptions preprocess;
  head::HeadOptions head;  // device and dtype left at their defaults: the caller's placement sets them
  std::string unnorm_key;
  head::BoundsStats proprio_stats, action_stats;
  std::string model_file, action_head_file, proprio_projector_file;
};

RunSpec resolve_run_dir(const std::string& dir, const RunDirOverrides& overrides = {});

// Loads the backbone and head of `spec` on `placement` and composes the policy (no tokenizer: callers pass token ids).
// custom_kernels: PolicyConfig::custom_kernels.
std::shared_ptr<const Policy> load_policy(const RunSpec& spec, const Placement& placement, bool custom_kernels = true);

}  // namespace m2vla
