/** `m2vla <command>`: one file per command under lib/cli/, dispatched here. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { M2vlaError } from '../errors.js';
import { closest } from '../options.js';
import { UsageError } from './args.js';

interface Command {
  summary: string;
  /** Printed with --help, and after a UsageError (exit 2). */
  usage: string;
  run(argv: string[]): Promise<number>;
}

const commands: Record<string, () => Promise<Command>> = {
  'add-skills': async () => (await import('./add-skills.js')).addSkillsCommand,
  demo: async () => (await import('./demo.js')).demoCommand,
  doctor: async () => (await import('./doctor.js')).doctorCommand,
  export: async () => (await import('./export.js')).exportCommand,
  pull: async () => (await import('./pull.js')).pullCommand,
  serve: async () => (await import('./serve.js')).serveCommand,
  train: async () => (await import('./train.js')).trainCommand,
};

function usage(): string {
  return ['usage: m2vla <command> [options]', '', 'commands:',
    '  add-skills  append demonstrations to a run\'s skill bank (MSM) without training, save as a run directory',
    '  demo     run the policy on one observation (the embedded demo model, or --run <dir | hf://owner/repo/folder>)',
    '  doctor   libtorch, build flags, threads, CPU features, GPUs, data-parallel support',
    '  pull     download a run directory from the Hugging Face Hub (cached, resumable, checksummed)',
    '  serve    serve the policy: openpi websocket protocol, VLA-Adapter POST /act',
    '  train    train the head and action queries on the frozen VLM (LIBERO HDF5 or LeRobot data)',
    '  export   turn a training checkpoint (any step) into a loadable run directory',
    '', 'm2vla <command> --help shows its options; m2vla --version the version.'].join('\n');
}

/** The package's version, from its package.json (lib/cli/ and dist/cli/ are both two levels below it). */
export function packageVersion(): string {
  const file = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json');
  return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version;
}

export async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h') {
    console.log(usage());
    return;
  }
  if (name === '--version' || name === '-v') {
    console.log(packageVersion());
    return;
  }
  const load = commands[name];
  if (!load) {
    const near = closest(name, Object.keys(commands));
    console.error(`m2vla: unknown command '${name}'${near ? ` (did you mean '${near}'?)` : ''}\n\n${usage()}`);
    process.exitCode = 2;
    return;
  }
  const command = await load();
  try {
    process.exitCode = await command.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`m2vla ${name}: ${e.message}\n\n${command.usage}`);
      process.exitCode = 2;
    } else if (e instanceof M2vlaError) {
      console.error(`m2vla ${name}: ${e.name} [${e.code}]: ${e.message}`);
      process.exitCode = 1;
    } else throw e;
  }
}
