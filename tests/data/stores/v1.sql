-- A store written by release c06a680 (schema version 1) through its own code;
-- made by tests/data/stores/make_released_store.py (see there how to regenerate). Do not edit.
PRAGMA user_version=1;
BEGIN TRANSACTION;
CREATE TABLE id_tags (
    source TEXT NOT NULL CHECK (source IN ('list', 'cache')),
    id_tag TEXT NOT NULL,
    status TEXT NOT NULL,
    expiry TEXT,
    parent TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (source, id_tag)
);
INSERT INTO "id_tags" VALUES('list','TAG-A','Accepted',NULL,NULL,'2026-12-02T06:00:30.547546+00:00');
INSERT INTO "id_tags" VALUES('list','TAG-X','Blocked',NULL,NULL,'2026-12-02T06:00:30.547546+00:00');
INSERT INTO "id_tags" VALUES('cache','TAG-C','Accepted','2026-12-20T08:00:00+00:00',NULL,'2026-12-02T06:00:30.548497+00:00');
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    tx_ref TEXT,
    body TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    message_id TEXT NOT NULL,
    offline INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
INSERT INTO "outbox" VALUES(5,'transaction_ended','b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2','{"seq_no": 3}','2026-12-02T06:00:30.553096+00:00','b84f6f28826245f0be0b2ed7748494bf',1,1,'CALLERROR InternalError');
INSERT INTO "outbox" VALUES(6,'transaction_started','c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3','{}','2026-12-02T06:00:30.554011+00:00','5fd1a00bfe8b41fd935608f8f89e0137',1,0,NULL);
INSERT INTO "outbox" VALUES(7,'meter_values','c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3','{"context": "Sample.Periodic", "at": "2026-11-20T11:01:00+00:00", "energy_wh": 1431, "export_wh": 0, "power_w": 11000.0, "voltage_v": [230.0, 230.0, 230.0], "current_a": [16.0, 16.0, 16.0], "connector_id": 1}','2026-12-02T06:00:30.554411+00:00','ff49296334754b9d99f250da45acae35',1,0,NULL);
INSERT INTO "outbox" VALUES(9,'security_event',NULL,'{"type": "InvalidCsmsCertificate", "timestamp": "2026-12-02T06:00:30.555316+00:00", "techInfo": "certificate expired"}','2026-12-02T06:00:30.555331+00:00','095537702a3c477b80c5ff0be903a848',0,0,NULL);
CREATE TABLE outbox_failed (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    tx_ref TEXT,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    failed_at TEXT NOT NULL
);
INSERT INTO "outbox_failed" VALUES(8,'security_event',NULL,'{"type": "SettingSystemTime", "timestamp": "2026-11-19T08:00:00+00:00", "techInfo": "clock set by the CSMS"}','2026-12-02T06:00:30.554704+00:00',0,'CALLERROR FormationViolation','2026-12-02T06:00:30.555047+00:00');
CREATE TABLE security_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    type TEXT NOT NULL,
    tech_info TEXT NOT NULL DEFAULT ''
);
INSERT INTO "security_log" VALUES(1,'2026-11-19T08:00:00+00:00','SettingSystemTime','clock set by the CSMS');
INSERT INTO "security_log" VALUES(2,'2026-12-02T06:00:30.555316+00:00','InvalidCsmsCertificate','certificate expired');
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO "settings" VALUES('list_version','8');
INSERT INTO "settings" VALUES('accepted_once','1');
INSERT INTO "settings" VALUES('ocpp16.MeterValueSampleInterval','60');
INSERT INTO "settings" VALUES('availability.1','Inoperative');
INSERT INTO "settings" VALUES('seq_no.evse.1','4');
CREATE TABLE transactions (
    ref TEXT PRIMARY KEY,
    connector_id INTEGER NOT NULL,
    id_tag TEXT NOT NULL,
    source TEXT NOT NULL,
    remote_start_id INTEGER,
    requested_at TEXT NOT NULL,
    started_at TEXT,
    meter_start_wh INTEGER,
    stopped_at TEXT,
    meter_stop_wh INTEGER,
    stop_reason TEXT,
    state TEXT NOT NULL CHECK (state IN ('started', 'ended')),
    csms_transaction_id TEXT,
    records TEXT NOT NULL DEFAULT '[]',
    verified INTEGER,
    delivered_at TEXT
);
INSERT INTO "transactions" VALUES('a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1',1,'TAG-A','remote',11,'2026-11-20T08:00:00+00:00','2026-11-20T08:00:00+00:00',259,'2026-11-20T08:30:00+00:00',260,'Remote','ended','a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1','[{"data": "OCMF|{\"FV\":\"1.0\",\"GI\":\"KEBA_KCP30\",\"GS\":\"17619300\",\"GV\":\"2.8.5\",\"PG\":\"T32\",\"IS\":false,\"IL\":\"NONE\",\"IF\":[\"RFID_NONE\",\"OCPP_NONE\",\"ISO15118_NONE\",\"PLMN_NONE\"],\"IT\":\"NONE\",\"ID\":\"\",\"RD\":[{\"TM\":\"2019-08-13T10:03:15,000+0000 I\",\"TX\":\"B\",\"EF\":\"\",\"ST\":\"G\",\"RV\":0.2596,\"RI\":\"1-b:1.8.0\",\"RU\":\"kWh\"},{\"TM\":\"2019-08-13T10:03:36,000+0000 R\",\"TX\":\"E\",\"EF\":\"\",\"ST\":\"G\",\"RV\":0.2597,\"RI\":\"1-b:1.8.0\",\"RU\":\"kWh\"}]}|{\"SD\":\"304502200E2F107C987A300AC1695CA89EA149A8CDFA16188AF0A33EE64B67964AA943F9022100889A72B6D65364BEA8562E7F6A0253157ACFF84FE4929A93B5964D23C4265699\"}", "encoding": "OCMF", "signing_method": "ECDSA-secp256r1-SHA256", "context": "Transaction.End", "verified": true, "problems": []}]',1,'2026-12-02T06:00:30.551571+00:00');
INSERT INTO "transactions" VALUES('b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2',1,'TAG-A','local',NULL,'2026-11-20T09:00:00+00:00','2026-11-20T09:00:00+00:00',1000,'2026-11-20T09:45:00+00:00',1420,'Local','ended','b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2','[{"data": "OCMF|{\"FV\":\"1.0\",\"GI\":\"HTB\",\"GS\":\"HTBSerial\",\"GV\":\"0.0.1\",\"PG\":\"T12345\",\"MV\":\"HTB\",\"MM\":\"HTB\",\"MS\":\"HTBGenerated1\",\"MF\":\"1.0\",\"IS\":true,\"IL\":\"VERIFIED\",\"IF\":[\"RFID_PLAIN\",\"OCPP_RS_TLS\"],\"IT\":\"ISO14443\",\"ID\":\"8D2E2D536DCFD0\",\"CI\":\"HTB\",\"CT\":\"CBIDC\",\"RD\":[{\"TM\":\"2019-04-02T17:28:45,867+0200 S\",\"TX\":\"B\",\"RV\":3.51824,\"RI\":\"1-b:1.8.e\",\"RU\":\"kWh\",\"EI\":1523,\"ST\":\"G\"},{\"TM\":\"2019-04-02T17:28:45,867+0200 S\",\"TX\":\"X\",\"RV\":7.01047,\"RI\":\"1-b:1.8.e\",\"RU\":\"kWh\",\"EI\":1523,\"ST\":\"G\"}]}|{\"SA\":\"ECDSA-secp192k1-SHA256\",\"SD\":\"303402185A5E62A58B45C10C37166B7E43D26296D79C450DF30C2FA4021822099CFAEB793D9246FAE130C93964B43FC4C5F2CF1732E1\"}", "encoding": "OCMF", "signing_method": "ECDSA-secp192k1-SHA256", "context": "Transaction.Begin", "verified": true, "problems": []}, {"data": "OCMF|{\"FV\":\"1.0\",\"GI\":\"HTB\",\"GS\":\"HTBSerial\",\"GV\":\"0.0.1\",\"PG\":\"T12345\",\"MV\":\"HTB\",\"MM\":\"HTB\",\"MS\":\"HTBGenerated1\",\"MF\":\"1.0\",\"IS\":true,\"IL\":\"VERIFIED\",\"IF\":[\"RFID_PLAIN\",\"OCPP_RS_TLS\"],\"IT\":\"ISO14443\",\"ID\":\"D12485D464E500\",\"CI\":\"HTB\",\"CT\":\"CBIDC\",\"RD\":[{\"TM\":\"2019-04-02T17:39:10,867+0200 S\",\"TX\":\"X\",\"RV\":9.43621,\"RI\":\"1-b:1.8.e\",\"RU\":\"kWh\",\"EI\":1523,\"ST\":\"G\"},{\"TM\":\"2019-04-02T17:39:10,867+0200 S\",\"TX\":\"E\",\"RV\":12.64134,\"RI\":\"1-b:1.8.e\",\"RU\":\"kWh\",\"EI\":1523,\"ST\":\"G\"}]}|{\"SA\":\"ECDSA-secp192k1-SHA256\",\"SD\":\"3035021900AD05AAF3958E32F798B4DBF9F217C8DF0214FFA1EF10B84A02185DA76499F3785AD7B94734314662162408A330A959B22D3C\"}", "encoding": "OCMF", "signing_method": "ECDSA-secp192k1-SHA256", "context": "Transaction.End", "verified": true, "problems": []}]',1,NULL);
INSERT INTO "transactions" VALUES('c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3',1,'TAG-C','remote',33,'2026-11-20T11:00:00+00:00','2026-11-20T11:00:00+00:00',1420,NULL,NULL,NULL,'started',NULL,'[]',NULL,NULL);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('outbox',9);
INSERT INTO "sqlite_sequence" VALUES('security_log',2);
COMMIT;
