// authorized_keys lines that are each malformed in their own way, with what the refusal must say;
// shared by the parser's unit test and the gateway's reload test.

/** Each line is malformed in its own way; the message must say how. */
export const malformedLines = (b64: string): Array<[string, RegExp]> => [
  [`pam-ed25519 ${b64} no options`, /targets="…" is required/],
  [`targets="" pam-ed25519 ${b64}`, /empty value/],
  [`targets="web pam-ed25519 ${b64}`, /not closed|expected/],
  [`targets="web,../x" pam-ed25519 ${b64}`, /not a target name/],
  [`targets="web,web" pam-ed25519 ${b64}`, /named twice/],
  [`targets="web",targets="db" pam-ed25519 ${b64}`, /given twice/],
  [`targets="web",command="sh" pam-ed25519 ${b64}`, /unknown option 'command'/],
  [`targets="web",expires="tomorrow" pam-ed25519 ${b64}`, /not an ISO-8601 time/],
  [`targets="web",expires="2027-13-45T00:00:00Z" pam-ed25519 ${b64}`, /not an ISO-8601 time/],
  [`targets="web",from="300.1.1.1/8" pam-ed25519 ${b64}`, /not an address or CIDR/],
  [`targets="web",from="198.51.100.0/33" pam-ed25519 ${b64}`, /not an address or CIDR/],
  [`targets="web",from="2001:db8::/129" pam-ed25519 ${b64}`, /not an address or CIDR/],
  [`targets="web",from="example.com" pam-ed25519 ${b64}`, /not an address or CIDR/],
  [`targets="web",max-tunnels=0 pam-ed25519 ${b64}`, /max-tunnels=0/],
  [`targets="web",max-tunnels=-1 pam-ed25519 ${b64}`, /max-tunnels/],
  [`targets="web",max-tunnels=many pam-ed25519 ${b64}`, /max-tunnels=many/],
  [`targets="web" ssh-ed25519 ${b64}`, /expected 'pam-ed25519'/],
  [`targets="web" pam-ed25519`, /32 bytes of base64/],
  [`targets="web" pam-ed25519 ${b64.slice(0, 40)}`, /32 bytes of base64/],
  [`targets="web" pam-ed25519 ${Buffer.alloc(33, 1).toString('base64')}`, /32 bytes of base64/],
  [`targets="web" pam-ed25519 ${b64.replace(/.=$/, '!=')}`, /32 bytes of base64/],
  [`targets="web", pam-ed25519 ${b64}`, /expected an option/],
  [`targets="web"`, /line ends after the options/],
  [`targets="web";from="1.2.3.4" pam-ed25519 ${b64}`, /unexpected ';'/],
  [`targets pam-ed25519 ${b64}`, /needs a value/],
  [`TARGETS="web" pam-ed25519 ${b64}`, /expected an option/],
];
