// The one loopback test: for the tunnel's local listener (bind address and peers) and the gateway's
// plain-HTTP warning alike. An IPv4-mapped IPv6 address (::ffff:127.0.0.1) is loopback too: a dual-stack
// socket reports IPv4 peers that way.

export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  const host = address.toLowerCase();
  return host === 'localhost' || host === '::1' || host.startsWith('127.') || host.startsWith('::ffff:127.');
}
