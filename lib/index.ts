export * from './errors.js';
export { runtimeInfo, measureGemmPeak, type RuntimeInfo } from './runtime.js';
export {
  augmentImage, checkRawImage, decodeImage, pixelValues, readPreprocessorConfig, toRawImage,
  type ImageInput, type ImagePreprocessing, type PixelValues, type PixelValuesOptions, type RawImage,
} from './images.js';
export { PromptTokenizer, promptText, QWEN_SYSTEM_PROMPT } from './tokenizer.js';
export { loadStateDict, type CheckpointTensor, type LoadStateDictOptions } from './checkpoint.js';
export {
  ActionHead, createHead, loadHead, readNormalizationStatistics,
  type NormalizationStatistics, type DenoiseOptions, type HeadCreateOptions, type HeadForwardInput, type HeadForwardOutput,
  type HeadPredictInput, type HeadPredictOutput, type HeadRetrieval, type LoadHeadOptions, type MemoryBankSnapshot,
  type NormStats,
} from './head.js';
export { ABLATIONS, type Ablation } from './config.js';
export { loadBackbone, Backbone, type AskOptions, type BackboneOptions, type BackboneOutput } from './backbone.js';
export type { Observation, TensorData } from './observation.js';
export {
  demoRunDir, loadPolicy, Policy,
  type ActOutput, type LayerGates, type PolicyFeatures, type PolicyMetadata, type PolicyOptions,
} from './policy.js';
export {
  isHubSpec, parseHubSpec, pull, resolveRunDir, type HubSpec, type PullOptions, type PullProgress, type PullResult,
} from './hub.js';
export type { AddSkillsOptions, AddSkillsResult, SkillEpisode, SkillSource } from './skills.js';
export { DEMO_DIMS, FULL_SIZE_DIMS, ensureRandomRun, type RandomRunDims } from './random-run.js';
export {
  LIBERO_ACTION_DIM, LIBERO_CHUNK, LIBERO_PROPRIO_DIM,
  type Dataset, type DatasetOptions, type Episode, type EpisodeEnd, type Frames, type Sample,
} from './data/dataset.js';
export { openLibero, type LiberoOptions } from './data/libero.js';
export { openLeRobot, type LeRobotOptions } from './data/lerobot.js';
export { BatchLoader, epochOrder, type Batch, type BatchLoaderOptions, type LoaderPosition } from './data/loader.js';
export {
  computeStatistics, writeDatasetStatistics, type DatasetStatistics, type FeatureStatistics,
} from './data/stats.js';
export {
  PolicyRunner, type ChunkPolicy, type RunnerEvent, type RunnerOptions, type RunnerStats, type Step,
} from './runner.js';
export { createServer, type PolicyServer, type ServedPolicy, type ServerOptions } from './server/server.js';
export { PRESETS as OBSERVATION_PRESETS, type ObservationKeys, type PresetName } from './server/observations.js';
export { NdArray, type DType } from './server/ndarray.js';
export { packOpenpi, unpackOpenpi } from './server/openpi.js';
export { parseJsonNumpy, toJsonNumpy } from './server/json-numpy.js';
export {
  distributedFromEnv, exportCheckpoint, train, Trainer, type DistributedOptions, type ExportOptions, type PackedBatch, type StepMetrics, type TrainOptions,
  type TrainProgress, type TrainResult,
} from './train.js';
export type {
  AugmentationDraw, BuildInfo, GpuInfo, ImageAugmentation, ModelDtype, NativeDevice, NativeDtype, NativeHeadDims,
  NativeKernelReport, NativeMicroBatch, NativePlacement, NativeTensor, NativeTrainerDims,
} from './native/binding.js';
export type { BackboneConfig, HeadConfig, LlmConfig, VitConfig } from './config.js';
