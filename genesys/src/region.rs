//! Genesys Cloud regions and the API and login base URLs they resolve to.
//!
//! Every region is reached through `api.<domain>` and `login.<domain>`; base-URL
//! overrides exist for tests and private environments.

use std::fmt;
use std::str::FromStr;

use url::Url;

/// A Genesys Cloud region: its AWS-style name and its domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Region name, e.g. `us-east-1`.
    pub name: &'static str,
    /// Domain under which `api.` and `login.` live, e.g. `mypurecloud.com`.
    pub domain: &'static str,
}

/// Every Genesys Cloud region this client knows, in the order Genesys lists them.
#[rustfmt::skip]
pub const REGIONS: &[Region] = &[
    Region { name: "us-east-1", domain: "mypurecloud.com" },
    Region { name: "eu-west-1", domain: "mypurecloud.ie" },
    Region { name: "ap-southeast-2", domain: "mypurecloud.com.au" },
    Region { name: "ap-northeast-1", domain: "mypurecloud.jp" },
    Region { name: "eu-central-1", domain: "mypurecloud.de" },
    Region { name: "us-west-2", domain: "usw2.pure.cloud" },
    Region { name: "ca-central-1", domain: "cac1.pure.cloud" },
    Region { name: "ap-northeast-2", domain: "apne2.pure.cloud" },
    Region { name: "eu-west-2", domain: "euw2.pure.cloud" },
    Region { name: "ap-south-1", domain: "aps1.pure.cloud" },
    Region { name: "us-east-2", domain: "use2.us-gov-pure.cloud" },
    Region { name: "sa-east-1", domain: "sae1.pure.cloud" },
    Region { name: "me-central-1", domain: "mec1.pure.cloud" },
    Region { name: "ap-northeast-3", domain: "apne3.pure.cloud" },
    Region { name: "eu-central-2", domain: "euc2.pure.cloud" },
    Region { name: "mx-central-1", domain: "mxc1.pure.cloud" },
    Region { name: "ap-southeast-1", domain: "apse1.pure.cloud" },
];

impl Region {
    /// The region with this name (`us-east-1`), if Genesys Cloud has one.
    pub fn by_name(name: &str) -> Option<&'static Region> {
        let name = name.trim();
        REGIONS.iter().find(|r| r.name.eq_ignore_ascii_case(name))
    }

    /// The region served from this domain (`mypurecloud.ie`), if any.
    pub fn by_domain(domain: &str) -> Option<&'static Region> {
        let domain = domain.trim().trim_end_matches('.');
        REGIONS.iter().find(|r| r.domain.eq_ignore_ascii_case(domain))
    }

    /// `https://api.<domain>/`.
    pub fn api_base_url(&self) -> Url {
        https_host(&format!("api.{}", self.domain))
    }

    /// `https://login.<domain>/`.
    pub fn login_base_url(&self) -> Url {
        https_host(&format!("login.{}", self.domain))
    }
}

fn https_host(host: &str) -> Url {
    // The table holds fixed, valid host names, so this cannot fail.
    Url::parse(&format!("https://{host}/")).expect("region table holds valid host names")
}

/// Why a region, domain or base URL could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvironmentError {
    /// Neither a known region name nor a known domain.
    #[error(
        "unknown Genesys Cloud region or environment {given:?}; valid regions: {}; valid \
         environments (domains): {}; for a private environment set the API and login base URLs",
        region_names(),
        region_domains()
    )]
    UnknownRegion {
        /// What was given.
        given: String,
    },
    /// A base-URL override that is not an absolute http(s) URL.
    #[error("{which} base URL {given:?} is invalid: {reason}")]
    InvalidBaseUrl {
        /// `API` or `login`.
        which: &'static str,
        /// What was given.
        given: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither a region, an environment, nor both base URLs were given.
    #[error(
        "no Genesys Cloud location: set a region (e.g. us-east-1) or an environment \
         (e.g. mypurecloud.com), or both the API and login base URLs"
    )]
    Missing,
    /// A region and an environment that name different places.
    #[error("region {region:?} and environment {environment:?} disagree; set only one of them")]
    Conflict {
        /// The region given.
        region: String,
        /// The environment (domain) given.
        environment: String,
    },
}

fn region_names() -> String {
    REGIONS.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
}

fn region_domains() -> String {
    REGIONS.iter().map(|r| r.domain).collect::<Vec<_>>().join(", ")
}

/// Where a Genesys Cloud organisation lives: the API and login base URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    region: Option<&'static Region>,
    api_base_url: Url,
    login_base_url: Url,
}

impl Environment {
    /// The environment of a region given by name, e.g. `us-east-1`.
    pub fn from_region(name: &str) -> Result<Self, EnvironmentError> {
        Region::by_name(name).map(Self::of).ok_or_else(|| EnvironmentError::UnknownRegion { given: name.to_owned() })
    }

    /// The environment of a region given by domain, e.g. `mypurecloud.ie`.
    pub fn from_domain(domain: &str) -> Result<Self, EnvironmentError> {
        Region::by_domain(domain)
            .map(Self::of)
            .ok_or_else(|| EnvironmentError::UnknownRegion { given: domain.to_owned() })
    }

    /// The environment named by either a region name or a domain.
    pub fn resolve(region_or_domain: &str) -> Result<Self, EnvironmentError> {
        Region::by_name(region_or_domain)
            .or_else(|| Region::by_domain(region_or_domain))
            .map(Self::of)
            .ok_or_else(|| EnvironmentError::UnknownRegion { given: region_or_domain.to_owned() })
    }

    /// An environment given only by base URLs (private environments, tests).
    pub fn from_base_urls(api_base_url: &str, login_base_url: &str) -> Result<Self, EnvironmentError> {
        Ok(Self {
            region: None,
            api_base_url: parse_base_url("API", api_base_url)?,
            login_base_url: parse_base_url("login", login_base_url)?,
        })
    }

    /// The environment described by configuration (the relay's `genesys` block): a
    /// `region` name and/or an `environment` domain, each base URL optionally
    /// overridden. Without region and environment, both base URLs are required.
    pub fn from_settings(
        region: Option<&str>,
        environment: Option<&str>,
        api_base_url: Option<&str>,
        login_base_url: Option<&str>,
    ) -> Result<Self, EnvironmentError> {
        let by_region = region.map(Self::from_region).transpose()?;
        let by_domain = environment.map(Self::resolve).transpose()?;
        let base = match (by_region, by_domain) {
            (Some(a), Some(b)) if a.region != b.region => {
                return Err(EnvironmentError::Conflict {
                    region: region.unwrap_or_default().to_owned(),
                    environment: environment.unwrap_or_default().to_owned(),
                });
            }
            (Some(env), _) | (None, Some(env)) => env,
            (None, None) => match (api_base_url, login_base_url) {
                (Some(api), Some(login)) => return Self::from_base_urls(api, login),
                _ => return Err(EnvironmentError::Missing),
            },
        };
        let base = match api_base_url {
            Some(url) => base.with_api_base_url(url)?,
            None => base,
        };
        match login_base_url {
            Some(url) => base.with_login_base_url(url),
            None => Ok(base),
        }
    }

    /// The environment of a known region.
    pub fn of(region: &'static Region) -> Self {
        Self { region: Some(region), api_base_url: region.api_base_url(), login_base_url: region.login_base_url() }
    }

    /// Replaces the API base URL (`https://api.<domain>/` by default).
    pub fn with_api_base_url(mut self, url: &str) -> Result<Self, EnvironmentError> {
        self.api_base_url = parse_base_url("API", url)?;
        Ok(self)
    }

    /// Replaces the login base URL (`https://login.<domain>/` by default).
    pub fn with_login_base_url(mut self, url: &str) -> Result<Self, EnvironmentError> {
        self.login_base_url = parse_base_url("login", url)?;
        Ok(self)
    }

    /// The region this environment was resolved from, if it came from the table.
    pub fn region(&self) -> Option<&'static Region> {
        self.region
    }

    /// Base URL of the Platform API, e.g. `https://api.mypurecloud.com/`.
    pub fn api_base_url(&self) -> &Url {
        &self.api_base_url
    }

    /// Base URL of the login (OAuth) service, e.g. `https://login.mypurecloud.com/`.
    pub fn login_base_url(&self) -> &Url {
        &self.login_base_url
    }

    /// An API endpoint; each segment is percent-encoded, so ids cannot change the path.
    pub(crate) fn api_url(&self, segments: &[&str]) -> Url {
        endpoint(&self.api_base_url, segments)
    }

    /// A login-service endpoint, built like [`Environment::api_url`].
    pub(crate) fn login_url(&self, segments: &[&str]) -> Url {
        endpoint(&self.login_base_url, segments)
    }
}

fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    // Base URLs are validated as http(s) with a host, which can always take segments.
    url.path_segments_mut().expect("http(s) base URLs have a path").pop_if_empty().extend(segments);
    url
}

impl FromStr for Environment {
    type Err = EnvironmentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::resolve(s)
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.region {
            Some(region) => write!(f, "{} (api {}, login {})", region.name, self.api_base_url, self.login_base_url),
            None => write!(f, "api {}, login {}", self.api_base_url, self.login_base_url),
        }
    }
}

fn parse_base_url(which: &'static str, given: &str) -> Result<Url, EnvironmentError> {
    let invalid =
        |reason: &str| EnvironmentError::InvalidBaseUrl { which, given: given.to_owned(), reason: reason.to_owned() };
    let url = Url::parse(given.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none() {
        return Err(invalid("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in a URL would be printed wherever the URL is, so the error
        // repeats the URL without them.
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        return Err(EnvironmentError::InvalidBaseUrl {
            which,
            given: shown.to_string(),
            reason: "it must not carry user info".to_owned(),
        });
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECTED: [(&str, &str); 17] = [
        ("us-east-1", "mypurecloud.com"),
        ("eu-west-1", "mypurecloud.ie"),
        ("ap-southeast-2", "mypurecloud.com.au"),
        ("ap-northeast-1", "mypurecloud.jp"),
        ("eu-central-1", "mypurecloud.de"),
        ("us-west-2", "usw2.pure.cloud"),
        ("ca-central-1", "cac1.pure.cloud"),
        ("ap-northeast-2", "apne2.pure.cloud"),
        ("eu-west-2", "euw2.pure.cloud"),
        ("ap-south-1", "aps1.pure.cloud"),
        ("us-east-2", "use2.us-gov-pure.cloud"),
        ("sa-east-1", "sae1.pure.cloud"),
        ("me-central-1", "mec1.pure.cloud"),
        ("ap-northeast-3", "apne3.pure.cloud"),
        ("eu-central-2", "euc2.pure.cloud"),
        ("mx-central-1", "mxc1.pure.cloud"),
        ("ap-southeast-1", "apse1.pure.cloud"),
    ];

    #[test]
    fn every_region_resolves_to_its_api_and_login_hosts() {
        assert_eq!(REGIONS.len(), EXPECTED.len());
        for (name, domain) in EXPECTED {
            let api = format!("https://api.{domain}/");
            let login = format!("https://login.{domain}/");
            for env in [
                Environment::from_region(name).unwrap(),
                Environment::from_domain(domain).unwrap(),
                Environment::resolve(name).unwrap(),
                domain.parse::<Environment>().unwrap(),
            ] {
                assert_eq!(env.api_base_url().as_str(), api, "{name}");
                assert_eq!(env.login_base_url().as_str(), login, "{name}");
                assert_eq!(env.region().unwrap().name, name);
                assert_eq!(env.region().unwrap().domain, domain);
            }
        }
    }

    #[test]
    fn names_and_domains_are_unique() {
        for (i, a) in REGIONS.iter().enumerate() {
            for b in &REGIONS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.domain, b.domain);
            }
        }
    }

    #[test]
    fn lookup_ignores_case_and_surrounding_space() {
        assert_eq!(Environment::resolve(" US-EAST-1 ").unwrap().region().unwrap().domain, "mypurecloud.com");
        assert_eq!(Environment::resolve("MyPureCloud.ie.").unwrap().region().unwrap().name, "eu-west-1");
    }

    #[test]
    fn unknown_region_names_the_valid_ones() {
        let err = Environment::resolve("us-east-9").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("\"us-east-9\""), "{message}");
        for (name, domain) in EXPECTED {
            assert!(message.contains(name), "{message} lacks {name}");
            assert!(message.contains(domain), "{message} lacks {domain}");
        }
        assert!(Environment::from_region("mypurecloud.com").is_err());
        assert!(Environment::from_domain("us-east-1").is_err());
    }

    #[test]
    fn base_urls_can_be_overridden() {
        let env = Environment::from_region("eu-west-1").unwrap().with_api_base_url("http://127.0.0.1:8081").unwrap();
        assert_eq!(env.api_base_url().as_str(), "http://127.0.0.1:8081/");
        assert_eq!(env.login_base_url().as_str(), "https://login.mypurecloud.ie/");

        let env = Environment::from_base_urls("https://gc.example/api-proxy/", "https://gc.example/login").unwrap();
        assert_eq!(env.region(), None);
        assert_eq!(env.api_base_url().path(), "/api-proxy/");
    }

    #[test]
    fn endpoints_keep_the_base_path_and_encode_ids() {
        let env = Environment::from_base_urls("https://gc.example/proxy/", "https://gc.example/login").unwrap();
        assert_eq!(env.login_url(&["oauth", "token"]).as_str(), "https://gc.example/login/oauth/token");
        assert_eq!(
            env.api_url(&["api", "v2", "x", "../a b?c"]).as_str(),
            "https://gc.example/proxy/api/v2/x/..%2Fa%20b%3Fc"
        );
    }

    #[test]
    fn settings_combine_region_environment_and_overrides() {
        let env = Environment::from_settings(Some("eu-west-1"), None, None, None).unwrap();
        assert_eq!(env.api_base_url().as_str(), "https://api.mypurecloud.ie/");
        let env = Environment::from_settings(None, Some("mypurecloud.jp"), None, Some("http://127.0.0.1:1/")).unwrap();
        assert_eq!(env.api_base_url().as_str(), "https://api.mypurecloud.jp/");
        assert_eq!(env.login_base_url().as_str(), "http://127.0.0.1:1/");
        let env = Environment::from_settings(Some("us-east-1"), Some("mypurecloud.com"), None, None).unwrap();
        assert_eq!(env.region().unwrap().name, "us-east-1");
        let env = Environment::from_settings(None, None, Some("http://a.test/"), Some("http://b.test/")).unwrap();
        assert_eq!(env.region(), None);

        assert_eq!(Environment::from_settings(None, None, None, None), Err(EnvironmentError::Missing));
        assert_eq!(
            Environment::from_settings(None, None, Some("http://a.test/"), None),
            Err(EnvironmentError::Missing)
        );
        assert!(matches!(
            Environment::from_settings(Some("us-east-1"), Some("mypurecloud.ie"), None, None),
            Err(EnvironmentError::Conflict { .. })
        ));
        assert!(matches!(
            Environment::from_settings(Some("mars-1"), None, None, None),
            Err(EnvironmentError::UnknownRegion { .. })
        ));
    }

    #[test]
    fn bad_base_urls_are_rejected_with_the_reason() {
        for bad in ["not a url", "ftp://x.example/", "https://u:p@x.example/", "https://x.example/?a=b"] {
            let err = Environment::from_base_urls(bad, "https://login.example/").unwrap_err();
            assert!(err.to_string().starts_with("API base URL"), "{err}");
            assert!(!err.to_string().contains("u:p"), "{err}");
        }
    }
}
