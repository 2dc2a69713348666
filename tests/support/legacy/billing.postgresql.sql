-- The billing schema as services.kit.db.migrate left it before Alembic (frozen; never edit).
CREATE TABLE schema_migrations (
	service VARCHAR(64) NOT NULL, 
	version INTEGER NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	applied_at TIMESTAMP WITH TIME ZONE DEFAULT now(), 
	PRIMARY KEY (service, version)
);

CREATE TABLE ledger_transactions (
	transaction_id VARCHAR(64) NOT NULL, 
	event_id VARCHAR(64) NOT NULL, 
	account_id VARCHAR(128) NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	amount BIGINT NOT NULL, 
	source_or_reason VARCHAR(32) NOT NULL, 
	purchased_amount BIGINT NOT NULL, 
	reference VARCHAR(256) NOT NULL, 
	occurred_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	recorded_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
	PRIMARY KEY (transaction_id), 
	UNIQUE (event_id)
);

CREATE INDEX ix_ledger_transactions_account_id ON ledger_transactions (account_id);

CREATE TABLE outbox (
	id BIGSERIAL NOT NULL, 
	event_id VARCHAR(128) NOT NULL, 
	topic VARCHAR(249) NOT NULL, 
	key VARCHAR(128) NOT NULL, 
	payload BYTEA NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	published_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (id), 
	UNIQUE (event_id)
);

CREATE INDEX ix_outbox_published_at ON outbox (published_at);

CREATE INDEX ix_outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE INDEX ix_outbox_unpublished_key ON outbox (key, id) WHERE published_at IS NULL;

CREATE TABLE processed_events (
	consumer_group VARCHAR(255) NOT NULL, 
	event_id VARCHAR(128) NOT NULL, 
	topic VARCHAR(249) NOT NULL, 
	partition INTEGER NOT NULL, 
	"offset" BIGINT NOT NULL, 
	processed_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (consumer_group, event_id)
);

CREATE INDEX ix_processed_events_group_processed_at ON processed_events (consumer_group, processed_at);
