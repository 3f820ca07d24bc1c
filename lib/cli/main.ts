/** `m2vla <command>`: one file per command under lib/cli/, dispatched here. */
import { M2vlaError } from '../errors.js';

interface Command {
  summary: string;
  run(argv: string[]): Promise<number>;
}

const commands: Record<string, () => Promise<Command>> = {
  'add-skills': async () => (await import('./add-skills.js')).addSkillsCommand,
  demo: async () => (await import('./demo.js')).demoCommand,
  doctor: async () => (await import('./doctor.js')).doctorCommand,
  serve: async () => (await import('./serve.js')).serveCommand,
  train: async () => (await import('./train.js')).trainCommand,
};

function usage(): string {
  return ['usage: m2vla <command> [options]', '', 'commands:',
    '  add-skills  append demonstrations to a run\'s skill bank (MSM) without training, save as a run directory',
    '  demo     run the policy on one observation (the embedded demo model, or --run <dir>)',
    '  doctor   libtorch, build flags, threads, CPU features',
    '  serve    serve the policy: openpi websocket protocol, VLA-Adapter POST /act (the demo model, or --run <dir>)',
    '  train    train the head and action queries on the frozen VLM (LIBERO HDF5 or LeRobot data)',
    '', 'm2vla <command> --help shows its options.'].join('\n');
}

export async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h') {
    console.log(usage());
    return;
  }
  const load = commands[name];
  if (!load) {
    console.error(`m2vla: unknown command '${name}'\n\n${usage()}`);
    process.exitCode = 2;
    return;
  }
  try {
    process.exitCode = await (await load()).run(rest);
  } catch (e) {
    if (e instanceof M2vlaError) {
      console.error(`m2vla ${name}: ${e.name} [${e.code}]: ${e.message}`);
      process.exitCode = 1;
    } else throw e;
  }
}
