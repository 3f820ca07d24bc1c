export * from './errors.js';
export { runtimeInfo, measureGemmPeak, type RuntimeInfo } from './runtime.js';
export {
  checkRawImage, decodeImage, pixelValues, readPreprocessorConfig, toRawImage,
  type ImageInput, type ImagePreprocessing, type PixelValues, type PixelValuesOptions, type RawImage,
} from './images.js';
export { PromptTokenizer, promptText, QWEN_SYSTEM_PROMPT } from './tokenizer.js';
export { loadStateDict, type CheckpointTensor, type LoadStateDictOptions } from './checkpoint.js';
export {
  ActionHead, createHead, loadHead, readDatasetStatistics,
  type DatasetStatistics, type DenoiseOptions, type HeadCreateOptions, type HeadForwardInput, type HeadForwardOutput,
  type HeadPredictInput, type HeadPredictOutput, type HeadRetrieval, type LoadHeadOptions, type NormStats,
} from './head.js';
export { loadBackbone, Backbone, type AskOptions, type BackboneOptions, type BackboneOutput } from './backbone.js';
export type { Observation, TensorData } from './observation.js';
