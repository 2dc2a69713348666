-- The ads schema as services.kit.db.migrate left it before Alembic (frozen; never edit).
CREATE TABLE schema_migrations (
	service VARCHAR(64) NOT NULL, 
	version INTEGER NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	applied_at TIMESTAMP WITH TIME ZONE DEFAULT now(), 
	PRIMARY KEY (service, version)
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
