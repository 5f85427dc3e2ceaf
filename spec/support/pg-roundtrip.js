// Run through `pam tunnel start db --run 'node spec/support/pg-roundtrip.js'`: creates a table,
// writes rows and reads them back through the tunnel with the `pg` client. Exits 0 only if every
// row came back intact; prints the rows so the caller can check them too.
import pg from 'pg';

const host = process.env.PAM_TUNNEL_HOST;
const port = Number(process.env.PAM_TUNNEL_PORT);
if (!host || !port) {
  console.error('PAM_TUNNEL_HOST / PAM_TUNNEL_PORT not set: run me through pam tunnel start --run');
  process.exit(64);
}

const client = new pg.Client({ host, port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 10_000 });
await client.connect();
try {
  const table = `pam_roundtrip_${process.pid}`;
  await client.query(`create table ${table} (id int primary key, name text not null)`);
  const names = ['alpha', 'beta', 'gamma', 'δέλτα'];
  for (const [index, name] of names.entries()) await client.query(`insert into ${table} values ($1, $2)`, [index + 1, name]);
  const { rows } = await client.query(`select id, name from ${table} order by id`);
  console.log(JSON.stringify(rows));
  const intact = rows.length === names.length && rows.every((row, index) => row.id === index + 1 && row.name === names[index]);
  await client.query(`drop table ${table}`);
  process.exitCode = intact ? 0 : 1;
} finally {
  await client.end();
}
