// Several resources made at once (peer connections, their channels, their answers): all of them, or
// none left open. Used wherever a tunnel's parallel connections are made (decision 0016).

/** Every task's value; if any fails, what the others made is released and the first failure thrown. */
export async function allOrNone<T>(tasks: ReadonlyArray<Promise<T>>, release: (made: T[]) => unknown): Promise<T[]> {
  const settled = await Promise.allSettled(tasks);
  const made = settled.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const failed = settled.find((result) => result.status === 'rejected');
  if (!failed) return made;
  await release(made);
  throw failed.reason;
}
