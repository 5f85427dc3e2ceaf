// The --redis URL: checked and shown without credentials, in a module of its own so `pam broker`
// without --redis never loads the Redis client.

import { TunnelError } from '../machines/errors.js';

/** The URL as it may be shown: no userinfo, ever. */
export function redactRedisUrl(text: string): string {
  try {
    const url = new URL(text);
    url.username = '';
    url.password = '';
    return url.href.replace(/\/$/, '');
  } catch {
    return text.replace(/\/\/[^/@]*@/, '//…@');
  }
}

/** `redis://HOST:PORT[/DB]` checked; throws a usage error that never repeats a password. */
export function parseRedisUrl(text: string): { host: string; port: number; db: number; username?: string; password?: string } {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new TunnelError('usage', `--redis '${redactRedisUrl(text)}' is not a URL: use redis://HOST:PORT[/DB]`);
  }
  const db = url.pathname === '' || url.pathname === '/' ? 0 : Number(url.pathname.slice(1));
  if (url.protocol !== 'redis:' || url.hostname === '' || !Number.isInteger(db) || db < 0 || db > 15 || url.search !== '') {
    throw new TunnelError('usage', `--redis '${redactRedisUrl(text)}' must be redis://HOST:PORT[/DB] (DB 0 to 15)`);
  }
  return {
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port === '' ? 6379 : Number(url.port),
    db,
    ...(url.username !== '' ? { username: decodeURIComponent(url.username) } : {}),
    ...(url.password !== '' ? { password: decodeURIComponent(url.password) } : {}),
  };
}
