//! The lbnodeagent: election, announcement and BGP glue. Not built yet (issues 5 and 6); see README.md.
