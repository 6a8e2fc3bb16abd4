//! Built-in reference data: a few real autonomous systems with the prefixes they are
//! known for, and the countries and cities they live in. Small on purpose: enough for
//! realistic answers, not a database.

/// A city used for geolocation answers.
#[derive(Debug)]
pub struct City {
    pub name: &'static str,
    pub region: &'static str,
    pub region_code: &'static str,
    pub postal: &'static str,
    pub lat: f64,
    pub lon: f64,
    pub tz: &'static str,
}

/// A country with the metadata IPTrust's `location.meta` needs.
#[derive(Debug)]
pub struct Country {
    pub code: &'static str,
    pub iso3: &'static str,
    pub numeric: &'static str,
    pub phone: &'static str,
    pub name: &'static str,
    pub native: &'static str,
    pub capital: &'static str,
    pub currency: &'static str,
    pub currency_name: &'static str,
    pub region: &'static str,
    pub subregion: &'static str,
    pub emoji: &'static str,
    pub emoji_u: &'static str,
    pub sanctions: &'static [&'static str],
    pub cities: &'static [City],
}

macro_rules! city {
    ($n:expr, $r:expr, $rc:expr, $p:expr, $lat:expr, $lon:expr, $tz:expr) => {
        City {
            name: $n,
            region: $r,
            region_code: $rc,
            postal: $p,
            lat: $lat,
            lon: $lon,
            tz: $tz,
        }
    };
}

#[rustfmt::skip]
pub static COUNTRIES: &[Country] = &[
    Country {
        code: "US", iso3: "USA", numeric: "840", phone: "1", name: "United States",
        native: "United States", capital: "Washington D.C.", currency: "USD",
        currency_name: "US Dollar", region: "Americas", subregion: "Northern America",
        emoji: "🇺🇸", emoji_u: "U+1F1FA U+1F1F8", sanctions: &[],
        cities: &[
            city!("Mountain View", "California", "CA", "94043", 37.4056, -122.0775, "America/Los_Angeles"),
            city!("Ashburn", "Virginia", "VA", "20147", 39.0438, -77.4874, "America/New_York"),
            city!("New York", "New York", "NY", "10001", 40.7128, -74.006, "America/New_York"),
            city!("Seattle", "Washington", "WA", "98101", 47.6062, -122.3321, "America/Los_Angeles"),
            city!("Dallas", "Texas", "TX", "75201", 32.7767, -96.797, "America/Chicago"),
        ],
    },
    Country {
        code: "DE", iso3: "DEU", numeric: "276", phone: "49", name: "Germany",
        native: "Deutschland", capital: "Berlin", currency: "EUR", currency_name: "Euro",
        region: "Europe", subregion: "Western Europe", emoji: "🇩🇪",
        emoji_u: "U+1F1E9 U+1F1EA", sanctions: &[],
        cities: &[
            city!("Frankfurt am Main", "Hessen", "HE", "60313", 50.1109, 8.6821, "Europe/Berlin"),
            city!("Falkenstein", "Saxony", "SN", "08223", 50.4779, 12.3713, "Europe/Berlin"),
            city!("Berlin", "Berlin", "BE", "10115", 52.52, 13.405, "Europe/Berlin"),
        ],
    },
    Country {
        code: "GB", iso3: "GBR", numeric: "826", phone: "44", name: "United Kingdom",
        native: "United Kingdom", capital: "London", currency: "GBP",
        currency_name: "British Pound", region: "Europe", subregion: "Northern Europe",
        emoji: "🇬🇧", emoji_u: "U+1F1EC U+1F1E7", sanctions: &[],
        cities: &[
            city!("London", "England", "ENG", "EC1A", 51.5074, -0.1278, "Europe/London"),
            city!("Manchester", "England", "ENG", "M1", 53.4808, -2.2426, "Europe/London"),
        ],
    },
    Country {
        code: "FR", iso3: "FRA", numeric: "250", phone: "33", name: "France",
        native: "France", capital: "Paris", currency: "EUR", currency_name: "Euro",
        region: "Europe", subregion: "Western Europe", emoji: "🇫🇷",
        emoji_u: "U+1F1EB U+1F1F7", sanctions: &[],
        cities: &[
            city!("Roubaix", "Hauts-de-France", "HDF", "59100", 50.6942, 3.1746, "Europe/Paris"),
            city!("Paris", "Ile-de-France", "IDF", "75001", 48.8566, 2.3522, "Europe/Paris"),
        ],
    },
    Country {
        code: "NL", iso3: "NLD", numeric: "528", phone: "31", name: "Netherlands",
        native: "Nederland", capital: "Amsterdam", currency: "EUR", currency_name: "Euro",
        region: "Europe", subregion: "Western Europe", emoji: "🇳🇱",
        emoji_u: "U+1F1F3 U+1F1F1", sanctions: &[],
        cities: &[city!("Amsterdam", "North Holland", "NH", "1012", 52.3676, 4.9041, "Europe/Amsterdam")],
    },
    Country {
        code: "CH", iso3: "CHE", numeric: "756", phone: "41", name: "Switzerland",
        native: "Schweiz", capital: "Bern", currency: "CHF", currency_name: "Swiss Franc",
        region: "Europe", subregion: "Western Europe", emoji: "🇨🇭",
        emoji_u: "U+1F1E8 U+1F1ED", sanctions: &[],
        cities: &[city!("Zurich", "Zurich", "ZH", "8001", 47.3769, 8.5417, "Europe/Zurich")],
    },
    Country {
        code: "JP", iso3: "JPN", numeric: "392", phone: "81", name: "Japan",
        native: "日本", capital: "Tokyo", currency: "JPY", currency_name: "Japanese Yen",
        region: "Asia", subregion: "Eastern Asia", emoji: "🇯🇵",
        emoji_u: "U+1F1EF U+1F1F5", sanctions: &[],
        cities: &[city!("Tokyo", "Tokyo", "13", "100-0001", 35.6762, 139.6503, "Asia/Tokyo")],
    },
    Country {
        code: "KR", iso3: "KOR", numeric: "410", phone: "82", name: "South Korea",
        native: "대한민국", capital: "Seoul", currency: "KRW", currency_name: "South Korean Won",
        region: "Asia", subregion: "Eastern Asia", emoji: "🇰🇷",
        emoji_u: "U+1F1F0 U+1F1F7", sanctions: &[],
        cities: &[city!("Seoul", "Seoul", "11", "04524", 37.5665, 126.978, "Asia/Seoul")],
    },
    Country {
        code: "SG", iso3: "SGP", numeric: "702", phone: "65", name: "Singapore",
        native: "Singapore", capital: "Singapore", currency: "SGD",
        currency_name: "Singapore Dollar", region: "Asia", subregion: "South-eastern Asia",
        emoji: "🇸🇬", emoji_u: "U+1F1F8 U+1F1EC", sanctions: &[],
        cities: &[city!("Singapore", "Central Singapore", "01", "018989", 1.2897, 103.8501, "Asia/Singapore")],
    },
    Country {
        code: "BR", iso3: "BRA", numeric: "076", phone: "55", name: "Brazil",
        native: "Brasil", capital: "Brasilia", currency: "BRL", currency_name: "Brazilian Real",
        region: "Americas", subregion: "South America", emoji: "🇧🇷",
        emoji_u: "U+1F1E7 U+1F1F7", sanctions: &[],
        cities: &[city!("Sao Paulo", "Sao Paulo", "SP", "01000-000", -23.5505, -46.6333, "America/Sao_Paulo")],
    },
    Country {
        code: "CA", iso3: "CAN", numeric: "124", phone: "1", name: "Canada",
        native: "Canada", capital: "Ottawa", currency: "CAD", currency_name: "Canadian Dollar",
        region: "Americas", subregion: "Northern America", emoji: "🇨🇦",
        emoji_u: "U+1F1E8 U+1F1E6", sanctions: &[],
        cities: &[city!("Toronto", "Ontario", "ON", "M5H", 43.6532, -79.3832, "America/Toronto")],
    },
    Country {
        code: "RU", iso3: "RUS", numeric: "643", phone: "7", name: "Russia",
        native: "Россия", capital: "Moscow", currency: "RUB", currency_name: "Russian Ruble",
        region: "Europe", subregion: "Eastern Europe", emoji: "🇷🇺",
        emoji_u: "U+1F1F7 U+1F1FA", sanctions: &["OFAC", "EU", "UK"],
        cities: &[city!("Moscow", "Moscow", "MOW", "101000", 55.7558, 37.6173, "Europe/Moscow")],
    },
];

/// A built-in autonomous system:
/// (number, handle, organisation, domain, country, RIR, type, allocation date).
#[rustfmt::skip]
pub type AsnRow = (u32, &'static str, &'static str, &'static str, &'static str, &'static str, &'static str, &'static str);

#[rustfmt::skip]
pub static ASNS: &[AsnRow] = &[
    (15169, "GOOGLE", "Google LLC", "google.com", "US", "ARIN", "hosting", "2000-03-30"),
    (13335, "CLOUDFLARENET", "Cloudflare, Inc.", "cloudflare.com", "US", "ARIN", "hosting", "2010-07-14"),
    (16509, "AMAZON-02", "Amazon.com, Inc.", "amazon.com", "US", "ARIN", "hosting", "2000-05-04"),
    (8075, "MICROSOFT-CORP-MSN-AS-BLOCK", "Microsoft Corporation", "microsoft.com", "US", "ARIN", "hosting", "1997-02-12"),
    (24940, "HETZNER-AS", "Hetzner Online GmbH", "hetzner.com", "DE", "RIPE", "hosting", "2002-06-03"),
    (16276, "OVH", "OVH SAS", "ovhcloud.com", "FR", "RIPE", "hosting", "2001-02-15"),
    (14061, "DIGITALOCEAN-ASN", "DigitalOcean, LLC", "digitalocean.com", "US", "ARIN", "hosting", "2012-09-25"),
    (3320, "DTAG", "Deutsche Telekom AG", "telekom.de", "DE", "RIPE", "isp", "1994-09-01"),
    (7922, "COMCAST-7922", "Comcast Cable Communications, LLC", "comcast.com", "US", "ARIN", "isp", "1997-02-06"),
    (2856, "BT-UK-AS", "British Telecommunications PLC", "bt.com", "GB", "RIPE", "isp", "1993-09-01"),
    (3215, "FRANCE-TELECOM", "Orange S.A.", "orange.com", "FR", "RIPE", "isp", "1994-05-02"),
    (1103, "SURFNET-NL", "SURF B.V.", "surf.nl", "NL", "RIPE", "education", "1992-11-05"),
    (3303, "SWISSCOM", "Swisscom (Schweiz) AG", "swisscom.ch", "CH", "RIPE", "isp", "1994-08-12"),
    (2497, "IIJ", "Internet Initiative Japan Inc.", "iij.ad.jp", "JP", "APNIC", "isp", "1993-03-01"),
    (4766, "KIXS-AS-KR", "Korea Telecom", "kt.com", "KR", "APNIC", "isp", "1997-04-01"),
    (4657, "STARHUB-INTERNET", "StarHub Ltd", "starhub.com", "SG", "APNIC", "isp", "1996-10-01"),
    (28573, "CLARO", "Claro NXT Telecomunicacoes Ltda", "claro.com.br", "BR", "LACNIC", "isp", "2002-10-21"),
    (812, "ROGERS-COMMUNICATIONS", "Rogers Communications Canada Inc.", "rogers.com", "CA", "ARIN", "isp", "1990-10-16"),
    (12389, "ROSTELECOM-AS", "PJSC Rostelecom", "rt.ru", "RU", "RIPE", "isp", "2002-08-21"),
    (714, "APPLE-ENGINEERING", "Apple Inc.", "apple.com", "US", "ARIN", "business", "1990-08-13"),
    (19281, "QUAD9-AS-1", "Quad9", "quad9.net", "US", "ARIN", "business", "2016-09-23"),
    (205100, "F3NETZE", "F3 Netze e.V.", "f3netze.de", "DE", "RIPE", "hosting", "2016-05-11"),
];

/// ASNs that hashed addresses are spread over (the well-known special ones excluded).
pub const POOL_LEN: usize = 19;

/// Prefixes with a known owner; more specific entries win.
#[rustfmt::skip]
pub static PREFIXES: &[(&str, u32)] = &[
    ("8.8.8.0/24", 15169),
    ("8.8.4.0/24", 15169),
    ("66.249.64.0/19", 15169),
    ("2001:4860::/32", 15169),
    ("1.1.1.0/24", 13335),
    ("1.0.0.0/24", 13335),
    ("104.16.0.0/13", 13335),
    ("2606:4700::/32", 13335),
    ("9.9.9.0/24", 19281),
    ("17.0.0.0/8", 714),
    ("185.220.101.0/24", 205100),
    ("49.12.0.0/16", 24940),
    ("78.46.0.0/15", 24940),
    ("138.199.128.0/17", 24940),
    ("74.144.0.0/12", 8075),
    ("13.64.0.0/11", 8075),
    ("52.0.0.0/11", 16509),
    ("3.0.0.0/9", 16509),
];

/// Googlebot's published range: `bot_type` googlebot on OpenIPApi, `google_bot` on IPTrust.
pub const GOOGLEBOT_RANGE: &str = "66.249.64.0/19";
