//! The embedded BGP speaker. Not built yet (issue 4); see README.md.
