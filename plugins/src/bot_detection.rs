//! `bot-detection` (Kong's `kong/plugins/bot-detection`): requests whose `User-Agent` is a
//! known bot, crawler or HTTP client library get 403, with allow and deny lists of regular
//! expressions of your own on top. The built-in rules are Kong's, which come from ua-parser's
//! `regexes.yaml`.

use std::sync::LazyLock;

use kong_pdk::prelude::*;
use kong_pdk::schema::{ConfigType, FieldSchema};
use regex::{Regex, RegexSet};

/// The plugin's configuration (Kong's `bot-detection/schema.lua`).
#[plugin(priority = 2500, version = "3.10.0", name = "bot-detection", protocols = protocols_http, no_consumer)]
pub struct BotDetection {
    /// User agents that pass, whatever else matches.
    #[field(default = [])]
    pub allow: Patterns,
    /// User agents that are refused.
    #[field(default = [])]
    pub deny: Patterns,
}

/// Regular expressions, compiled once when the configuration loads (case-sensitive, matched
/// anywhere in the value).
#[derive(Debug, Clone, Default)]
pub struct Patterns(Vec<Regex>);

impl Patterns {
    fn matches(&self, text: &str) -> bool {
        self.0.iter().any(|r| r.is_match(text))
    }
}

fn compile(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|_| format!("not a valid regex: {pattern}"))
}

impl<'de> serde::Deserialize<'de> for Patterns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let all = Vec::<String>::deserialize(d)?;
        all.iter()
            .map(|p| compile(p))
            .collect::<Result<_, _>>()
            .map(Patterns)
            .map_err(serde::de::Error::custom)
    }
}

impl kong_pdk::schema::literal::DefaultFits<kong_pdk::schema::literal::EmptyArrayLiteral> for Patterns {}

impl ConfigType for Patterns {
    fn field_schema() -> FieldSchema {
        FieldSchema::array_of(FieldSchema::checked_string(|v| {
            compile(v.as_str().unwrap_or_default()).map(drop)
        }))
    }
}

/// Kong's built-in rules (`bot-detection/rules.lua`), matched in one pass.
static BOTS: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new([
        // Pingdom
        r"(Pingdom.com_bot_version_)(\d+)\.(\d+)",
        // Facebook
        r"(facebookexternalhit)/(\d+)\.(\d+)",
        // Google+ snippets
        r"Google.*/\+/web/snippet",
        // Twitter
        r"(Twitterbot)/(\d+)\.(\d+)",
        // AWS S3 clients
        r"(Boto3?|JetS3t|aws-cli|aws-sdk-[A-Za-z-]+|s3fs)/(\d+)(?:\.(\d+)(?:\.(\d+))?)?",
        // WebPageTest
        r"(PTST|WebPageTest)(?:/(\d+)(?:\.(\d+))?)?",
        // '/name-0.0' bots
        r"/((?:Ant-)?Nutch|[A-z]+[Bb]ot|[A-z]+[Ss]pider|Axtaris|fetchurl|Isara|ShopSalad|Tailsweep)[ \-](\d+)(?:\.(\d+)(?:\.(\d+))?)?",
        // 'name/0.0' bots
        r"(008|Altresium|Argus|BaiduMobaider|BoardReader|DNSGroup|DataparkSearch|EDI|Goodzer|Grub|INGRID|Infohelfer|LinkedInBot|LOOQ|Nutch|PathDefender|Peew|PostPost|Steeler|Twitterbot|VSE|WebCrunch|WebZIP|Y!J-BR[A-Z]|YahooSeeker|envolk|sproose|wminer)/(\d+)(?:\.(\d+)(?:\.(\d+))?)?",
        // MSIECrawler
        r"(MSIE) (\d+)\.(\d+)([a-z]\d?)?;.* MSIECrawler",
        // HTTP client libraries
        r"(Google-HTTP-Java-Client|Apache-HttpClient|Go-http-client|scalaj-http|http%20client|Python-urllib|HttpMonitor|TLSProber|WinHTTP|JNLP|okhttp|aihttp|reqwest|axios|unirest-(?:java|python|ruby|nodejs|php|net))(?:[ /](\d+)(?:\.(\d+)(?:\.(\d+))?)?)?",
        // Crawlers by name
        r"(1470\.net crawler|50\.nu|8bo Crawler Bot|Aboundex|Accoona-[A-z]+-Agent|AdsBot-Google(?:-[a-z]+)?|altavista|AppEngine-Google|archive.*?\.org_bot|archiver|Ask Jeeves|[Bb]ai[Dd]u[Ss]pider(?:-[A-Za-z]+)*|bingbot|BingPreview|blitzbot|BlogBridge|BoardReader(?: [A-Za-z]+)*|boitho.com-dc|BotSeer|\b\w*favicon\w*\b|\bYeti(?:-[a-z]+)?|Catchpoint bot|[Cc]harlotte|Checklinks|clumboot|Comodo HTTP\(S\) Crawler|Comodo-Webinspector-Crawler|ConveraCrawler|CRAWL-E|CrawlConvera|Daumoa(?:-feedfetcher)?|Feed Seeker Bot|findlinks|Flamingo_SearchEngine|FollowSite Bot|furlbot|Genieo|gigabot|GomezAgent|gonzo1|(?:[a-zA-Z]+-)?Googlebot(?:-[a-zA-Z]+)?|Google SketchUp|grub-client|gsa-crawler|heritrix|HiddenMarket|holmes|HooWWWer|htdig|ia_archiver|ICC-Crawler|Icarus6j|ichiro(?:/mobile)?|IconSurf|IlTrovatore(?:-Setaccio)?|InfuzApp|Innovazion Crawler|InternetArchive|IP2[a-z]+Bot|jbot\b|KaloogaBot|Kraken|Kurzor|larbin|LEIA|LesnikBot|Linguee Bot|LinkAider|LinkedInBot|Lite Bot|Llaut|lycos|Mail\.RU_Bot|masidani_bot|Mediapartners-Google|Microsoft .*? Bot|mogimogi|mozDex|MJ12bot|msnbot(?:-media *)?|msrbot|netresearch|Netvibes|NewsGator[^/]*|^NING|Nutch[^/]*|Nymesis|ObjectsSearch|Orbiter|OOZBOT|PagePeeker|PagesInventory|PaxleFramework|Peeplo Screenshot Bot|PlantyNet_WebRobot|Pompos|Read%20Later|Reaper|RedCarpet|Retreiver|Riddler|Rival IQ|scooter|Scrapy|Scrubby|searchsight|seekbot|semanticdiscovery|Simpy|SimplePie|SEOstats|SimpleRSS|SiteCon|Slurp|snappy|Speedy Spider|Squrl Java|TheUsefulbot|ThumbShotsBot|Thumbshots\.ru|TwitterBot|URL2PNG|Vagabondo|VoilaBot|^vortex|Votay bot|^voyager|WASALive.Bot|Web-sniffer|WebThumb|WeSEE:[A-z]+|WhatWeb|WIRE|WordPress|Wotbox|www\.almaden\.ibm\.com|Xenu(?:.s)? Link Sleuth|Xerka [A-z]+Bot|yacy(?:bot)?|Yahoo[a-z]*Seeker|Yahoo! Slurp|Yandex\w+|YodaoBot(?:-[A-z]+)?|YottaaMonitor|Yowedo|^Zao|^Zao-Crawler|ZeBot_www\.ze\.bz|ZooShot|ZyBorg)(?:[ /]v?(\d+)(?:\.(\d+)(?:\.(\d+))?)?)?",
        // 'name/0.0' with archiver, indexer, scraper, bot, spider or crawl in the name
        r"(?:/[A-Za-z0-9\.]+)? *([A-Za-z0-9 \-_!\[\]:]*(?:[Aa]rchiver|[Ii]ndexer|[Ss]craper|[Bb]ot|[Ss]pider|[Cc]rawl[a-z]*))/(\d+)(?:\.(\d+)(?:\.(\d+))?)?",
        // 'name 0.0', the same
        r"(?:/[A-Za-z0-9\.]+)? *([A-Za-z0-9 _!\[\]:]*(?:[Aa]rchiver|[Ii]ndexer|[Ss]craper|[Bb]ot|[Ss]pider|[Cc]rawl[a-z]*)) (\d+)(?:\.(\d+)(?:\.(\d+))?)?",
        // spider, scrape, bot (but not CUBOT) or crawl anywhere
        r"((?:[A-z0-9]+|[A-z\-]+ ?)?(?: the )?(?:[Ss][Pp][Ii][Dd][Ee][Rr]|[Ss]crape|[A-Za-z0-9-]*(?:[^C][^Uu])[Bb]ot|[Cc][Rr][Aa][Ww][Ll])[A-z0-9]*)(?:(?:[ /]| v)(\d+)(?:\.(\d+)(?:\.(\d+))?)?)?",
    ])
    .expect("the built-in rules are valid")
});

#[handler]
impl Handler for BotDetection {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        let request = kong.request();
        let mut agents = request.get_headers().get_all("user-agent").iter();
        let agent = match (agents.next(), agents.next()) {
            (None, _) => return Ok(()),
            (Some(_), Some(_)) => return Err(Exit::error(400, "Only one User-Agent header allowed").into()),
            (Some(one), None) => String::from_utf8_lossy(one.as_bytes()).trim().to_owned(),
        };
        if self.allow.matches(&agent) {
            return Ok(());
        }
        if self.deny.matches(&agent) || BOTS.is_match(&agent) {
            return Err(Exit::error(403, "Forbidden").into());
        }
        Ok(())
    }
}
