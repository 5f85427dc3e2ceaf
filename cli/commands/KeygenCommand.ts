// `pam keygen`: a user's Ed25519 key pair for gateways with --authorized-keys. The private key stays
// here (0600); the printed public line goes to the gateway's operator.

import { hostname, userInfo } from 'node:os';
import { Command } from 'clipanion';
import { TunnelError } from '../../machines/errors.js';
import { defaultUserKeyFile, generateUserKey } from '../../adapters/user-key.js';
import { isOneLine } from '../../machines/start-flags.js';
import { PamCommand } from '../pam-command.js';
import { SingleString } from '../single-option.js';

export class KeygenCommand extends PamCommand {
  static override paths = [['keygen']];

  static override usage = Command.Usage({
    category: 'Setup',
    description: 'create your Ed25519 key for gateways that grant access per key',
    details: `
      Writes the private key to --file (default $XDG_CONFIG_HOME/pam/id_ed25519, mode 0600, its
      directory 0700) and the public key to the same path with .pub, and prints the public key as one
      line \`pam-ed25519 <base64> <comment>\`: give that line to the gateway's operator, who adds it to
      the gateway's --authorized-keys file with the targets you may reach. An existing key is never
      overwritten (exit 2). \`pam tunnel start\` then signs each request with the key from --key-file,
      PAM_KEY_FILE or the default file; the private key never leaves this machine. See docs/access.md.
    `,
    examples: [
      ['Create the default key', '$0 keygen'],
      ['A second key with its own comment', '$0 keygen --file ~/.config/pam/ops_ed25519 --comment "alice on-call"'],
    ],
  });

  file = SingleString('--file', {
    description: 'where to write the private key (default $XDG_CONFIG_HOME/pam/id_ed25519); the public key goes to FILE.pub',
  });
  comment = SingleString('--comment', { description: 'text after the public key, e.g. who holds it (default user@host)' });

  async execute(): Promise<number> {
    const path = this.file ?? defaultUserKeyFile(this.context.env);
    if (path.trim() === '') throw new TunnelError('usage', '--file needs a path');
    const comment = (this.comment ?? defaultComment()).trim();
    if (!isOneLine(comment)) throw new TunnelError('usage', '--comment must be one line of printable text');
    const { line, fingerprint } = generateUserKey(path, comment);
    this.context.stderr.write(`pam: private key ${path} (0600), public key ${path}.pub, fingerprint ${fingerprint}\n`);
    this.context.stdout.write(`${line}\n`);
    return 0;
  }
}

function defaultComment(): string {
  try {
    return `${userInfo().username}@${hostname()}`;
  } catch {
    return hostname();
  }
}
