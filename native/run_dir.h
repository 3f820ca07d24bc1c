// A run directory resolved once, in C++: config.json (+ manifest.json of tiny fixtures), preprocessor_config.json,
// dataset_statistics.json, the checkpoint file names and the recorded ablation, turned into the one spec the models
// are built from. The only reader of those files: the addon hands the spec to TypeScript (resolveRunDir, lib/config.ts),
// and the C++ tests, the bench tool and the GPU acceptance run (no Node) use it directly. Every number is checked
// here with its file and field and bounded far above any released model (a zero head count divides by zero later,
// a huge one allocates without limit). Errors are E_CONFIG / E_CHECKPOINT naming the file and key.
#pragma once
#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "device.h"
#include "head/config.h"
#include "head/normalize.h"
#include "io/json.h"
#include "model/config.h"
#include "model/preprocess.h"

namespace m2vla {

class Policy;

// observation.ts reads at most these cameras (primary, wrist).
constexpr int64_t kMaxCameras = 2;

struct RunDirOverrides {
  std::optional<std::vector<int64_t>> key_layer_indices;  // MSM key layers (default manifest's or [3, 11, 23])
  std::optional<std::string> unnorm_key;                  // dataset_statistics.json entry (required with several)
  bool statistics = true;  // read dataset_statistics.json (a training init run need not have one entry)
  bool head = true;        // find the head's checkpoints (a VLM alone needs only model.safetensors)
};

// preprocessor_config.json as stated (PrismaticImageProcessor): the square size and one mean/std triple per backbone,
// in double precision (PreprocessOptions holds them as float for the arithmetic).
struct PreprocessorConfig {
  int64_t size = 0;
  std::vector<std::array<double, 3>> means, stds;
  model::PreprocessOptions options() const;
};

// One dataset_statistics.json entry: its key (after the "_no_noops" rule) and the action/proprio bounds.
struct NormalizationStats {
  std::string key;
  head::BoundsStats action, proprio;
};

struct RunSpec {
  std::string dir;
  model::BackboneConfig backbone;
  int64_t max_positions = 32768;  // text_config.max_position_embeddings: the whole sequence must fit
  PreprocessorConfig preprocessor;
  model::PreprocessOptions preprocess;  // preprocessor.options()
  head::HeadOptions head;  // device and dtype left at their defaults: the caller's placement sets them
  std::optional<NormalizationStats> stats;  // absent with RunDirOverrides::statistics = false
  std::string model_file, action_head_file, proprio_projector_file;
};

RunSpec resolve_run_dir(const std::string& dir, const RunDirOverrides& overrides = {});

// A run-directory JSON file holding an object: a regular file (a FIFO planted in its place would block), valid JSON,
// an object at the top level; E_CONFIG naming the file otherwise.
io::Json read_json_file(const std::string& file);
// The same rule for JSON text already in memory (`source` names it in errors).
io::Json parse_json_object(const std::string& text, const std::string& source);
// preprocessor_config.json's rules (resize-naive, bicubic, one square size; tvf_normalize_params win over
// means/stds); `source` names it in errors.
PreprocessorConfig parse_preprocessor_config(const io::Json& cfg, const std::string& source);
// dataset_statistics.json: without `unnorm_key` the file must hold exactly one entry; "<key>_no_noops" is used when
// only that exists (the LIBERO eval script's rule). Values within ±1e9, q99 >= q01, an optional boolean mask.
NormalizationStats read_normalization_statistics(const std::string& file, const std::optional<std::string>& unnorm_key);
// A head checkpoint of a run directory: `<stem>.safetensors`, else the one `<stem>--*checkpoint.pt` (E_CHECKPOINT).
std::string head_checkpoint_file(const std::string& dir, const std::string& stem);

// Loads the backbone and head of `spec` on `placement` and composes the policy (no tokenizer: callers pass token ids).
// custom_kernels: PolicyConfig::custom_kernels. Needs the spec's statistics.
std::shared_ptr<const Policy> load_policy(const RunSpec& spec, const Placement& placement, bool custom_kernels = true);

}  // namespace m2vla
