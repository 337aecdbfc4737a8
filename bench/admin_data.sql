-- Bench data for bench/admin.py: 10^4 accounts, 10^5 invoices, 10^6 grants, 5x10^6 ledger rows.
-- Set-based (INSERT ... SELECT generate_series); rows keep every constraint and the ledger
-- invariant (remaining = sum of a grant's entries). Parameters: :accounts, :grants.
BEGIN;
INSERT INTO credits_account (id, account_id, name, email, currency, auto_apply_credits,
                             auto_apply_expiring_credits, created_at)
SELECT a, 'bench_' || lpad(a::text, 6, '0'), 'Bench customer ' || a, 'b' || a || '@example.com',
       (ARRAY['USD','USD','USD','USD','USD','USD','USD','USD','USD','USD','USD','USD','USD','USD',
              'EUR','EUR','EUR','GBP','GBP','JPY'])[1 + a % 20],
       true, false, now() - interval '800 days'
FROM generate_series(1, :accounts) a;

INSERT INTO invoices_invoice (id, invoice_id, invoice_number, currency, status, issue_date,
                              due_date, subtotal, credits_total, total, created_at, created_by,
                              finalized_at, paid_at, void_reason, account_id)
SELECT n, 'inv_' || substr(md5('inv' || n), 1, 24), 'B-' || lpad(n::text, 7, '0'), a.currency,
       'paid', (now() - (n % 700) * interval '1 day')::date, NULL, 100000, 0, 100000,
       now() - (n % 700) * interval '1 day', 'job:bench', now() - (n % 700) * interval '1 day',
       now() - (n % 700) * interval '1 day', '', a.id
FROM generate_series(1, :accounts * 10) n
JOIN credits_account a ON a.id = 1 + (n - 1) / 10;

INSERT INTO credits_creditgrant (
    id, credit_id, type, status, currency, original, remaining, used, reserved, price,
    description, reference_id, issued_by, reason, issued_at, effective_at, activated_at,
    expires_at, last_used_at, voided_at, expired_at, auto_activate, approval_required,
    approved_by, issuer_actor, applicable_services, minimum_spend, usage_limit,
    account_restrictions, campaign_id, tags, notes, transferable, extra_metadata, account_id)
SELECT g.i, 'cred_' || substr(md5('cred' || g.i), 1, 24),
       (ARRAY['promotional','refund','bonus','partner','support','referral','migration',
              'purchased'])[1 + (g.i / 7) % 8],
       g.status, a.currency, g.orig,
       CASE g.status WHEN 'active' THEN g.orig * 0.6 ELSE 0 END,
       CASE g.status WHEN 'active' THEN g.orig * 0.4 WHEN 'applied' THEN g.orig
                     ELSE g.orig * 0.3 END,
       0, g.orig, 'Bench credit ' || g.i, '', g.issuer, 'bench', g.issued, g.issued, g.issued,
       CASE g.status WHEN 'active' THEN now() + (1 + (g.i * 13) % 120) * interval '1 day'
                     WHEN 'expired' THEN g.issued + interval '30 days' END,
       g.issued + interval '4 days',
       CASE g.status WHEN 'voided' THEN g.issued + interval '5 days' END,
       CASE g.status WHEN 'expired' THEN g.issued + interval '30 days' END,
       true, false, '', g.issuer, '["all"]'::jsonb, 0, 'unlimited', '[]'::jsonb,
       'camp-' || (g.i % 500), '[]'::jsonb, '', false, '{}'::jsonb, a.id
FROM (
    SELECT i, 100 * (1 + i % 50) AS orig,
           CASE WHEN i % 20 < 12 THEN 'active' WHEN i % 20 < 16 THEN 'expired'
                WHEN i % 20 < 18 THEN 'voided' ELSE 'applied' END AS status,
           now() - ((i % 700) + 35) * interval '1 day' - (i % 1440) * interval '1 minute'
               AS issued,
           (ARRAY['user:alice','user:bob','marketing_team','support_team','partner_program',
                  'job:referrals','api_key:ab12cd34 (acme)','user:carol'])[1 + i % 8] AS issuer
    FROM generate_series(1, :grants) i
) g
JOIN credits_account a ON a.id = 1 + g.i % :accounts;

INSERT INTO credits_ledgerentry (id, entry_id, kind, amount, currency, balance_after, actor,
                                 reason, created_at, account_id, grant_id, invoice_id)
SELECT (g.id - 1) * 5 + k + 1, 'led_' || substr(md5('led' || g.id || '.' || k), 1, 24),
       CASE WHEN k = 0 THEN 'grant'
            WHEN k = 4 AND g.status = 'expired' THEN 'expiration'
            WHEN k = 4 AND g.status = 'voided' THEN 'void'
            ELSE 'deduction' END,
       CASE WHEN k = 0 THEN g.original
            WHEN g.status = 'applied' THEN -g.original * 0.25
            WHEN k = 4 AND g.status IN ('expired', 'voided') THEN -g.original * 0.7
            ELSE -g.original * 0.1 END,
       g.currency,
       CASE WHEN g.status = 'applied' THEN g.original * (1 - 0.25 * k)
            WHEN k = 4 AND g.status IN ('expired', 'voided') THEN 0
            ELSE g.original * (1 - 0.1 * k) END,
       CASE WHEN k = 0 THEN g.issuer_actor WHEN k = 4 AND g.status = 'expired'
            THEN 'job:expire_credits' ELSE 'user:bench' END,
       'bench',
       CASE WHEN k = 4 AND g.status = 'expired' THEN g.expires_at
            ELSE g.issued_at + k * interval '1 day' END,
       g.account_id, g.id,
       CASE WHEN k = 0 OR (k = 4 AND g.status IN ('expired', 'voided')) THEN NULL
            ELSE (g.account_id - 1) * 10 + 1 + (g.id / :accounts + k) % 10 END
FROM credits_creditgrant g CROSS JOIN generate_series(0, 4) k;

SELECT setval(pg_get_serial_sequence('credits_account', 'id'), (SELECT max(id) FROM credits_account));
SELECT setval(pg_get_serial_sequence('invoices_invoice', 'id'), (SELECT max(id) FROM invoices_invoice));
SELECT setval(pg_get_serial_sequence('credits_creditgrant', 'id'), (SELECT max(id) FROM credits_creditgrant));
SELECT setval(pg_get_serial_sequence('credits_ledgerentry', 'id'), (SELECT max(id) FROM credits_ledgerentry));
COMMIT;
VACUUM ANALYZE credits_account;
VACUUM ANALYZE invoices_invoice;
VACUUM ANALYZE credits_creditgrant;
VACUUM ANALYZE credits_ledgerentry;
