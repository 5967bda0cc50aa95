/**
 * Glob matchers compiled once at policy load: account globs and path globs.
 */

const REGEX_SPECIAL = /[\\^$.*+?()[\]{}|/]/g;

function escapeRegex(s: string): string {
  return s.replace(REGEX_SPECIAL, '\\$&');
}

/** Compiles an account glob ("*" any run of characters, "?" one character) into an anchored matcher. */
export function compileAccountGlob(glob: string): (account: string) => boolean {
  if (glob === '*') return () => true;
  if (!/[*?]/.test(glob)) return (account) => account === glob;
  const source = glob
    .split('')
    .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : escapeRegex(c)))
    .join('');
  const re = new RegExp(`^${source}$`, 's');
  return (account) => re.test(account);
}

/**
 * Compiles path globs into one anchored regular expression.
 * "*" matches within one segment; a whole "**" segment matches any number of segments,
 * including none, so "/repos/**" matches "/repos", "/repos/" and "/repos/a/b".
 */
export function compilePathGlobs(globs: readonly string[]): RegExp {
  const alternatives = globs.map((glob) => {
    const segments = glob.split('/').slice(1);
    let out = '';
    for (const segment of segments) {
      if (segment === '**') {
        out += '(?:/[^/]*)*';
        continue;
      }
      out += '/' + segment.split('*').map(escapeRegex).join('[^/]*');
    }
    return out === '' ? '/' : out;
  });
  return new RegExp(`^(?:${alternatives.join('|')})$`, 's');
}

const ENCODED_SEPARATOR = /%2f|%5c/i;
// A dot segment carrying path parameters: Tomcat, Jetty and Spring strip ";..." per segment and
// then resolve "..;" as "..", so "/allowed/..;/admin" reaches /admin there.
const DOT_SEGMENT_WITH_PARAMS = /^\.\.?;/;

/**
 * The path that path rules are matched on: percent-decoded once, except for encoded slashes
 * and backslashes (%2F, %5C), which stay encoded so they cannot forge a segment boundary,
 * then dot-segment normalized (RFC 3986 §5.2.4).
 * Returns null when the path cannot be matched safely: bad percent-encoding, a dot segment
 * hidden behind an encoded separator ("a%2F..%2Fb") or behind path parameters ("..;x"), which
 * some origins resolve outside the segment the rule saw, or a NUL (%00), where C-string origins
 * stop reading.
 */
export function normalizePathForMatch(path: string): string | null {
  let decoded: string;
  try {
    decoded = decodeKeepingSeparators(path);
  } catch {
    return null;
  }
  const out: string[] = [];
  const segments = decoded.split('/');
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i]!;
    if (ENCODED_SEPARATOR.test(segment) && hasHiddenDotSegment(segment)) return null;
    if (DOT_SEGMENT_WITH_PARAMS.test(segment) || segment.includes('\u0000')) return null;
    if (segment === '.') {
      if (i === segments.length - 1) out.push('');
      continue;
    }
    if (segment === '..') {
      out.pop();
      if (i === segments.length - 1) out.push('');
      continue;
    }
    out.push(segment);
  }
  return '/' + out.join('/');
}

function hasHiddenDotSegment(segment: string): boolean {
  return segment.split(/%2f|%5c/i).some((part) => part === '.' || part === '..');
}

function decodeKeepingSeparators(path: string): string {
  if (!path.includes('%')) return path;
  // Split around %2F/%5C so decodeURIComponent never sees them; decode everything else once.
  return path
    .split(/(%2f|%5c)/i)
    .map((part, i) => (i % 2 === 1 ? part.toUpperCase() : decodeURIComponent(part)))
    .join('');
}
