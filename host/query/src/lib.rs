//! moonlink-query: SQL over committed and buffered rows (issue 14; under construction).
