// A string option that may be given once. clipanion's Option.String keeps the last of repeated
// values silently (`--port 1 --port 2` → 2), which hides a mistake in a script: here it is a usage error.

import { Option } from 'clipanion';
import { TunnelError } from '../machines/errors.js';

export function SingleString(descriptor: string, options: { readonly description: string }): string | undefined;
export function SingleString(descriptor: string, initial: string, options: { readonly description: string }): string;
export function SingleString(
  descriptor: string,
  initialOrOptions: string | { readonly description: string },
  maybeOptions?: { readonly description: string },
): string | undefined {
  const initial = typeof initialOrOptions === 'string' ? initialOrOptions : undefined;
  const description = typeof initialOrOptions === 'string' ? (maybeOptions?.description ?? '') : initialOrOptions.description;
  const names = descriptor.split(',');
  return Option.makeCommandOption<string | undefined>({
    definition(builder) {
      builder.addOption({ names, arity: 1, description });
    },
    transformer(_builder, _key, state) {
      const given = state.options.filter(({ name }) => names.includes(name));
      if (given.length > 1)
        throw new TunnelError(
          'usage',
          `${names.at(-1)} was given ${given.length} times (${given.map(({ value }) => `'${String(value)}'`).join(', ')}): give it once`,
        );
      const value: unknown = given[0]?.value;
      return typeof value === 'string' ? value : initial;
    },
  });
}
