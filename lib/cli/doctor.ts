/**
 * `m2vla doctor`: where libtorch came from, how the addon was built, what this CPU can do and, in a CUDA build, every
 * GPU (name, compute capability, free/total memory, driver/runtime versions). Non-zero exit with the fix when the addon
 * cannot load. A CPU-only build never probes for a GPU: it says so and how to build with CUDA.
 */
import type { BuildInfo } from '../native/binding.js';
import { findLibtorch } from '../../scripts/libtorch.mjs';
import { M2vlaError } from '../errors.js';
import { runtimeInfo } from '../runtime.js';
import { parseFlags } from './args.js';

const USAGE = `usage: m2vla doctor [--json]
Reports where libtorch came from, how the addon was built (CUDA, data-parallel), threads, CPU features and GPUs.`;

/** What data-parallel training needs when the addon was built without it (libtorch ships gloo's code, not its headers). */
export const GLOO_HINT = 'not built: data-parallel training (m2vla train --nproc N) needs gloo\'s headers; install them ' +
  '(Debian/Ubuntu: sudo apt-get install libgloo-dev), then rebuild with `npm run build:native`';

export const doctorCommand = {
  summary: 'report libtorch, build flags, threads, CPU features and GPUs',
  usage: USAGE,
  async run(argv: string[]): Promise<number> {
    const { values } = parseFlags(argv, { json: { type: 'boolean' } });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    let info;
    try {
      info = await runtimeInfo();
    } catch (e) {
      const tried: string[] = [];
      const found = findLibtorch({ tried });
      console.error('m2vla doctor: the native addon does not load.');
      console.error(`  error: ${e instanceof Error ? e.message : String(e)}`);
      console.error(`  libtorch: ${found ? `${found.dir} (${found.source}, ${found.version})` : 'not found'}`);
      for (const t of tried) console.error(`    looked at ${t}`);
      console.error('  fix: run `npm install` in the m2vla package (fetches the CPU libtorch wheel and builds the addon),\n' +
        '       or point LIBTORCH at a libtorch directory and run `npm run build:native`.');
      return e instanceof M2vlaError ? 1 : 2;
    }
    if (values.json) {
      console.log(JSON.stringify(info, null, 2));
      return 0;
    }
    const yes = (b: boolean) => (b ? 'yes' : 'no');
    const lines = [
      `m2vla doctor`,
      `  addon:          ${info.addonPath}`,
      `  libtorch:       ${info.libtorch.dir}`,
      `  found via:      ${info.libtorch.source}`,
      `  version:        ${info.libtorch.version} (addon compiled against ${info.torchVersion})`,
      `  build:          CUDA ${info.cuda ? 'on' : 'off'}, N-API ${info.napiVersion}`,
      `  data-parallel:  ${info.distributed ? 'c10d Gloo (m2vla train --nproc N)' : GLOO_HINT}${info.nccl ? '; NCCL on GPUs' : ''}`,
      ...gpuLines(info),
      `  torch threads:  ${info.threads}`,
      `  CPU features:   AVX2 ${yes(info.cpu.avx2)}, AVX-512 ${yes(info.cpu.avx512f)}, AVX512-BF16 ${yes(info.cpu.avx512bf16)}, AMX-BF16 ${yes(info.cpu['amx-bf16'])}, ` +
        `AMX-INT8 ${yes(info.cpu['amx-int8'])}, AVX512-VNNI ${yes(info.cpu.avx512vnni)}, AMX usable ${yes(info.cpu.amxUsable)}`,
      `  CPU dtype:      'auto' = ${info.cpuDtype.auto} (${info.cpuDtype.reason}); ` +
        `'int8' ${info.cpuDtype.int8 ? 'available' : 'unavailable (needs AVX512-VNNI or AMX-INT8)'}` +
        (info.cpuDtype.onednnBf16 ? '' : "; 'bfloat16' runs, but slowly (no oneDNN bfloat16 kernels without AVX-512)"),
    ];
    if (!info.libtorch.version.startsWith(info.torchVersion)) {
      lines.push(`  WARNING: the addon was compiled against libtorch ${info.torchVersion} but ${info.libtorch.version} is loaded; ` +
        'run `npm run build:native`.');
    }
    console.log(lines.join('\n'));
    return 0;
  },
};

const GIB = 2 ** 30;
const cudaVersion = (v: number) => `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;

function gpuLines(info: BuildInfo): string[] {
  if (!info.cuda) return [`  GPU:            none used: CPU-only build (no GPU probed); to use one, ${info.cudaBuildHint}`];
  if (!info.gpus?.length) return [`  GPU:            none usable: ${info.gpuError ?? 'no CUDA GPU visible'}`];
  return info.gpus.map((g) => `  GPU ${g.device}:     ${g.name}, compute capability ${g.capability}, ` +
    `${(g.freeBytes / GIB).toFixed(1)} of ${(g.totalBytes / GIB).toFixed(1)} GiB free, ` +
    `driver CUDA ${cudaVersion(g.driverVersion)}, runtime CUDA ${cudaVersion(g.runtimeVersion)}`);
}
