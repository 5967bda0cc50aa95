/**
 * What the session list says about each session beyond its record: the client parsed from its
 * user agent, its approximate location, and flags such as `new_location` — a session that first
 * appeared from a country none of the account's earlier sessions used.
 */
import type { SessionRecord } from '../state/types.js';
import { parseUserAgent, type DeviceInfo } from './device.js';
import type { GeoIp, GeoLocation } from './geo.js';

/** The derived fields of one session. */
export interface SessionInsight {
  readonly device: DeviceInfo;
  readonly location: GeoLocation;
  readonly flags: readonly string[];
}

/** Derives device, location and flags; the GeoIP database is the operator's (`--geoip`). */
export class SessionInsights {
  readonly #geo: GeoIp;

  constructor(geo: GeoIp) {
    this.#geo = geo;
  }

  /** Location of one address. */
  locate(ip: string | null): GeoLocation {
    return this.#geo.locate(ip);
  }

  /**
   * Insights for all sessions of one account. Flags compare each session with the account's
   * earlier sessions (by sign-in time), so they are the same on every replica and need no state.
   */
  annotate(sessions: readonly SessionRecord[]): Map<string, SessionInsight> {
    const ordered = [...sessions].sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
    const countries = new Set<string>();
    const out = new Map<string, SessionInsight>();
    for (const s of ordered) {
      const location = this.#geo.locate(s.clientIp);
      const flags: string[] = [];
      if (location.country !== null) {
        if (countries.size > 0 && !countries.has(location.country)) flags.push('new_location');
        countries.add(location.country);
      }
      out.set(s.id, { device: parseUserAgent(s.userAgent), location, flags });
    }
    return out;
  }

  /** Insight for a session seen for the first time, judged against the account's other sessions. */
  firstSeen(session: SessionRecord, others: readonly SessionRecord[], clientIp: string | null, userAgent: string | null): SessionInsight {
    const now = { ...session, clientIp, userAgent };
    return this.annotate([...others.filter((o) => o.id !== session.id && o.clientIp !== null), now]).get(session.id)!;
  }
}
