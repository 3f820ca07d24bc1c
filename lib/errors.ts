/** Every error m2vla throws is an M2vlaError with a stable `code`; native errors are converted to these classes. */
export type ErrorCode =
  | 'E_INPUT' | 'E_SHAPE' | 'E_CHECKPOINT' | 'E_CONFIG' | 'E_DISPOSED' | 'E_NATIVE' | 'E_LOAD' | 'E_STALE' | 'E_BUSY'
  | 'E_DISTRIBUTED' | 'E_DOWNLOAD' | 'E_NONFINITE';

export class M2vlaError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}
/** The base of the classes below: an M2vlaError whose `code` is fixed (`name` is still the subclass's own). */
function coded(code: ErrorCode) {
  return class extends M2vlaError {
    constructor(message: string, options?: { cause?: unknown }) { super(code, message, options); }
  };
}

/** A user-supplied value is invalid (NaN in state, unknown option, wrong image count, ...). */
export class InputError extends coded('E_INPUT') {}
/** A tensor or array has the wrong shape or size. */
export class ShapeError extends coded('E_SHAPE') {}
/** A checkpoint file is missing, truncated, corrupt, or lacks / mis-shapes a tensor. */
export class CheckpointError extends coded('E_CHECKPOINT') {}
/** A run directory's configuration is missing or inconsistent. */
export class ConfigError extends coded('E_CONFIG') {}
/** The object was disposed. */
export class DisposedError extends coded('E_DISPOSED') {}
/** The native addon or libtorch could not be loaded. */
export class LoadError extends coded('E_LOAD') {}
/** A control loop asked for an action and no planned action covers this tick (PolicyRunner with onEmpty: 'throw'). */
export class StaleError extends coded('E_STALE') {}
/** A server's request queue is full: retry later. */
export class BusyError extends coded('E_BUSY') {}
/** Data-parallel training: a peer process exited or did not reach a collective within the timeout. */
export class DistributedError extends coded('E_DISTRIBUTED') {}

/** A download from the Hugging Face Hub failed (network, HTTP status, checksum) or is not in the cache offline. */
export class DownloadError extends coded('E_DOWNLOAD') {}

/**
 * The model produced NaN or Inf actions (bad weights or statistics, an overflow): they are never returned, so that
 * they cannot reach a robot. `observations` lists the indices (within the call) whose actions were not finite.
 */
export class NonFiniteError extends coded('E_NONFINITE') {
  readonly observations: number[];
  constructor(message: string, options?: { cause?: unknown; observations?: number[] }) {
    super(message, options);
    this.observations = options?.observations ?? [];
  }
}

/** An unexpected failure inside libtorch or the addon. */
export class NativeError extends coded('E_NATIVE') {}

const byCode: Record<ErrorCode, new (message: string, options?: { cause?: unknown }) => M2vlaError> = {
  E_INPUT: InputError, E_SHAPE: ShapeError, E_CHECKPOINT: CheckpointError, E_CONFIG: ConfigError,
  E_DISPOSED: DisposedError, E_NATIVE: NativeError, E_LOAD: LoadError, E_STALE: StaleError, E_BUSY: BusyError,
  E_DISTRIBUTED: DistributedError, E_DOWNLOAD: DownloadError, E_NONFINITE: NonFiniteError,
};

/** Convert an error from the addon (a plain Error with `code`) into its typed class; others pass through. */
export function toTypedError(e: unknown): unknown {
  if (e instanceof M2vlaError) return e;
  if (e instanceof Error) {
    const code = (e as Error & { code?: string }).code as ErrorCode | undefined;
    const Cls = code && byCode[code];
    if (Cls) return new Cls(e.message, { cause: e });
  }
  return e;
}

/** A shape as error messages print it, "[2, 8, 7]" (the native side prints at::IntArrayRef the same way). */
export const formatShape = (shape: readonly number[]): string => `[${shape.join(', ')}]`;
