export * from './errors.js';
export { runtimeInfo, measureGemmPeak, type RuntimeInfo } from './runtime.js';
export {
  ActionHead, createHead, loadHead, readDatasetStatistics,
  type DatasetStatistics, type DenoiseOptions, type HeadCreateOptions, type HeadForwardInput, type HeadForwardOutput,
  type HeadPredictInput, type HeadPredictOutput, type HeadRetrieval, type LoadHeadOptions, type NormStats,
} from './head.js';
