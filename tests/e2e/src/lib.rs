//! What the end-to-end tests need and nothing more: a static file server for the release
//! build and a small WebDriver client for chromedriver.
pub mod serve;
pub mod webdriver;
