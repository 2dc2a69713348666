-- The connects schema as services.kit.db.migrate left it before Alembic (frozen; never edit).
CREATE TABLE schema_migrations (
	service VARCHAR(64) NOT NULL, 
	version INTEGER NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	applied_at TIMESTAMP WITH TIME ZONE DEFAULT now(), 
	PRIMARY KEY (service, version)
);

CREATE TABLE holds (
	hold_id VARCHAR(32) NOT NULL, 
	account_id VARCHAR(128) NOT NULL, 
	amount BIGINT NOT NULL, 
	captured BIGINT NOT NULL, 
	reason VARCHAR(32) NOT NULL, 
	reference VARCHAR(256) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	expires_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	resolved_at TIMESTAMP WITH TIME ZONE, 
	allocations TEXT NOT NULL, 
	PRIMARY KEY (hold_id), 
	CONSTRAINT ck_holds_amounts CHECK (amount > 0 AND captured >= 0 AND captured <= amount)
);

CREATE INDEX ix_holds_open_expiry ON holds (expires_at) WHERE status = 'OPEN';

CREATE TABLE idempotency_keys (
	request_id VARCHAR(128) NOT NULL, 
	method VARCHAR(32) NOT NULL, 
	fingerprint VARCHAR(64) NOT NULL, 
	response BYTEA NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (request_id)
);

CREATE TABLE ledger_transactions (
	transaction_id VARCHAR(32) NOT NULL, 
	account_id VARCHAR(128) NOT NULL, 
	sequence BIGINT NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	amount BIGINT NOT NULL, 
	source VARCHAR(16), 
	spend_reason VARCHAR(32), 
	return_reason VARCHAR(48), 
	reference VARCHAR(256) NOT NULL, 
	job_id VARCHAR(256), 
	hold_id VARCHAR(32), 
	returned_transaction_id VARCHAR(32), 
	available_after BIGINT NOT NULL, 
	held_after BIGINT NOT NULL, 
	occurred_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (transaction_id), 
	CONSTRAINT uq_ledger_transactions_account_sequence UNIQUE (account_id, sequence), 
	CONSTRAINT ck_ledger_transactions_amount CHECK (amount > 0), 
	UNIQUE (returned_transaction_id)
);

CREATE INDEX ix_ledger_transactions_job ON ledger_transactions (job_id) WHERE job_id IS NOT NULL;

CREATE TABLE lot_movements (
	transaction_id VARCHAR(32) NOT NULL, 
	lot_id VARCHAR(32) NOT NULL, 
	source VARCHAR(16) NOT NULL, 
	origin_source VARCHAR(16) NOT NULL, 
	amount BIGINT NOT NULL, 
	expires_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (transaction_id, lot_id)
);

CREATE TABLE lots (
	lot_id VARCHAR(32) NOT NULL, 
	account_id VARCHAR(128) NOT NULL, 
	source VARCHAR(16) NOT NULL, 
	origin_source VARCHAR(16) NOT NULL, 
	amount BIGINT NOT NULL, 
	remaining BIGINT NOT NULL, 
	held BIGINT NOT NULL, 
	expired BIGINT NOT NULL, 
	issued_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	expires_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (lot_id), 
	CONSTRAINT ck_lots_amounts CHECK (amount > 0 AND remaining >= 0 AND held >= 0 AND expired >= 0), 
	CONSTRAINT ck_lots_conserved CHECK (remaining + held + expired <= amount)
);

CREATE INDEX ix_lots_due ON lots (expires_at) WHERE remaining > 0;

CREATE INDEX ix_lots_live ON lots (account_id) WHERE remaining > 0 OR held > 0;

CREATE TABLE postings (
	transaction_id VARCHAR(32) NOT NULL, 
	ledger_account VARCHAR(160) NOT NULL, 
	amount BIGINT NOT NULL, 
	PRIMARY KEY (transaction_id, ledger_account)
);

CREATE TABLE wallets (
	account_id VARCHAR(128) NOT NULL, 
	available BIGINT NOT NULL, 
	held BIGINT NOT NULL, 
	sequence BIGINT NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (account_id), 
	CONSTRAINT ck_wallets_available CHECK (available >= 0), 
	CONSTRAINT ck_wallets_held CHECK (held >= 0)
);

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
