//! kafka: a source plugin that reads Kafka topics into Iceberg tables (issue 15; under construction).
