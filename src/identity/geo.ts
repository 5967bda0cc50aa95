/**
 * Approximate location of a session's client IP from a MaxMind-format database the operator
 * supplies (`--geoip FILE`): "private network" for internal addresses, "unknown" without a
 * database or without a match.
 */
import maxmind, { type CityResponse, type Reader } from 'maxmind';
import { classifyAddress, canonicalIp } from '../net/address.js';

/** A location as the session list shows it. */
export interface GeoLocation {
  /** ISO 3166 country code, or null. */
  readonly country: string | null;
  readonly city: string | null;
  /** "Portland, US", "private network" or "unknown". */
  readonly label: string;
}


export const UNKNOWN: GeoLocation = Object.freeze({ country: null, city: null, label: 'unknown' });
export const PRIVATE_NETWORK: GeoLocation = Object.freeze({ country: null, city: null, label: 'private network' });

/** Looks up client addresses. */
export class GeoIp {
  readonly #reader: Reader<CityResponse> | null;

  private constructor(reader: Reader<CityResponse> | null) {
    this.#reader = reader;
  }

  /** Opens the database, or a locator that only knows "private network" and "unknown". */
  static async open(file: string | null): Promise<GeoIp> {
    if (file === null) return new GeoIp(null);
    return new GeoIp(await maxmind.open<CityResponse>(file, { cache: { max: 10_000 } }));
  }

  /** The location of an address (IPv4-mapped IPv6 is unwrapped first). */
  locate(ip: string | null): GeoLocation {
    if (ip === null) return UNKNOWN;
    const canonical = canonicalIp(ip);
    if (canonical === null) return UNKNOWN;
    if (classifyAddress(canonical) !== 'public') return PRIVATE_NETWORK;
    const rec = this.#reader?.get(canonical);
    if (!rec) return UNKNOWN;
    const country = rec.country?.iso_code ?? rec.registered_country?.iso_code ?? null;
    const city = (rec.city?.names as Record<string, string> | undefined)?.['en'] ?? null;
    const label = [city, country].filter((x) => x !== null).join(', ') || 'unknown';
    return Object.freeze({ country, city, label });
  }
}
