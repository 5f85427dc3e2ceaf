// Split a command line into words the way a POSIX shell would for simple commands: whitespace
// separates, '…' is literal, "…" allows \" and \\, a backslash escapes the next character, and a
// `#` that starts a word starts a comment.

export function splitWords(line: string): { words: string[] } | { error: string } {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  for (let index = 0; index < line.length; index += 1) {
    const char = line[index]!;
    if (char === "'") {
      const end = line.indexOf("'", index + 1);
      if (end < 0) return { error: 'unterminated single quote' };
      word += line.slice(index + 1, end);
      index = end;
      inWord = true;
    } else if (char === '"') {
      let end = index + 1;
      for (; end < line.length && line[end] !== '"'; end += 1) {
        if (line[end] === '\\' && (line[end + 1] === '"' || line[end + 1] === '\\')) end += 1;
        word += line[end];
      }
      if (end >= line.length) return { error: 'unterminated double quote' };
      index = end;
      inWord = true;
    } else if (char === '\\' && index + 1 < line.length) {
      word += line[index + 1];
      index += 1;
      inWord = true;
    } else if (char === '#' && !inWord) {
      break; // a comment runs to the end of the line, as in sh
    } else if (/\s/.test(char)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += char;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return { words };
}
