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
/** A user-supplied value is invalid (NaN in state, unknown option, wrong image count, ...). */
export class InputError extends M2vlaError {
  constructor(message: string, options?: { cause?: unknown }) { super('E_INPUT', message, options); }
}
/** A tensor or array has the wrong shape or size. */
export class ShapeError extends M2vlaError {
  constructor(message: string, options?: { cause?: unknown }) { super('E_SHAPE', message, options); }
}
/** A checkpoint file is missing, truncated, corrupt, or lacks / mis-shapes a tensor. */
export class CheckpointError extends M2vlaError {
  constructor(message: string, options?: { cause?: unknown }) { super('E_CHECKPOINT', message, options); }
}
/** A run directory's configuration is missing or inconsistent. */
export class ConfigError extends M2vlaError {
  constructor(message: string, options?: { cause?: unknown }) { super('E_CONFIG', message, options); }
}
/** The object was disposed. */
export class DisposedError extends M2vlaError {
  constructor(message: string, options?: { cause?: unknown }) { super('E_DISPOSED', message, options); }
}
/** The native addon or libtorch could not be loaded. */
export class LoadError extends M2vlaError {
  constructor(message: string, options?: { cause?: unknown }) { super('E_LOAD', message, options); }
}
/** A control loop asked for an action and no planned action covers this tick (PolicyRunner with onEmpty: 'throw'). */
export class StaleError extends M2vlaError {
  constructor(message: string, options?: { cause?: unknown }) { super('E_STALE', message, options); }
}
/** A server's request queue is full: retry later. */
export class BusyError extends M2vlaError {
  constructor(message: string, options?: { cause?: unknown }) { super('E_BUSY', message, options); }
}
/** Data-parallel training: a peer process exited or did not reach a collective within the timeout. */
export class DistributedError extends M2vlaError {
  constructor(message: string, options?: { cause?: unknown }) { super('E_DISTRIBUTED', message, options); }
}

/** A download from the Hugging Face Hub failed (network, HTTP status, checksum) or is not in the cache offline. */
export class DownloadError extends M2vlaError {
  constructor(message: string, options?: { cause?: unknown }) { super('E_DOWNLOAD', message, options); }
}

/**
 * The model produced NaN or Inf actions (bad weights or statistics, an overflow): they are never returned, so that
 * they cannot reach a robot. `observations` lists the indices (within the call) whose actions were not finite.
 */
export class NonFiniteError extends M2vlaError {
  readonly observations: number[];
  constructor(message: string, options?: { cause?: unknown; observations?: number[] }) {
    super('E_NONFINITE', message, options);
    this.observations = options?.observations ?? [];
  }
}

/** An unexpected failure inside libtorch or the addon. */
export class NativeError extends M2vlaError {
  constructor(message: string, options?: { cause?: unknown }) { super('E_NATIVE', message, options); }
}

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
