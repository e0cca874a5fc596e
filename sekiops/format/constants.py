"""Constants of the Sekiban DCB snapshot format (see the format reference, sections 2, 5 and 6)."""

PAYLOAD_TYPE = "Sekiban.Dcb.Snapshots.SerializableMultiProjectionStateEnvelope"
DEFAULT_SERVICE_ID = "default"

#: Payload-level offload when the compressed payload is larger than this (never at equality).
PAYLOAD_OFFLOAD_THRESHOLD = (2_097_152 - 16_384) * 3 // 4  # 1,560,576

#: Record-level offload thresholds by state store kind (envelope bytes; never at equality).
RECORD_THRESHOLD_COSMOS = 1_000_000
RECORD_THRESHOLD_POSTGRES = 2_097_152
RECORD_THRESHOLD_DYNAMODB = 350_000

#: Cosmos DB refuses items larger than this (HTTP 413).
COSMOS_ITEM_LIMIT = 2 * 1024 * 1024

PROVIDER_AZURE = "AzureBlobStorage"
PROVIDER_S3 = "AwsS3"
PROVIDER_LOCAL = "LocalFileSystem"
PROVIDER_MEMORY = "InMemory"

BUILD_SOURCE_STREAM = "SEKIOPS_STREAM"
BUILD_SOURCE_LEGACY = "SEKIOPS_LEGACY"
BUILD_SOURCE_MIGRATE = "SEKIOPS_MIGRATE"
BUILD_SOURCE_MAX = 32

LIFECYCLE_ACTIVE = 0
LIFECYCLE_TOMBSTONED = 1

GZIP_MAGIC = b"\x1f\x8b"
