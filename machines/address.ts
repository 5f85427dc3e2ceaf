// How an address is written next to its port: an IPv6 address in brackets ([::1]:5432), as in URLs,
// so the port cannot be read as part of the address.

export function hostPort(host: string, port: number): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
}
