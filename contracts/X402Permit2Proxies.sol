// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ISignatureTransfer} from "./Permit2.sol";

/// @title X402BasePermit2Proxy
/// @notice What the x402 Permit2 proxies share: the payer signs a Permit2 `PermitWitnessTransferFrom` naming a
///         proxy as spender and a witness naming the recipient, so whoever submits it cannot redirect the funds.
/// @dev Same external ABI and checks as the canonical x402 proxies, but `PERMIT2` is a compile-time constant and
///      the reentrancy guard lives in transient storage: the contracts keep no state of their own, so their
///      runtime code can be copied to the canonical proxy addresses on a test chain.
abstract contract X402BasePermit2Proxy is ReentrancyGuardTransient {
    /// @notice The canonical Permit2 contract, the same address on every chain.
    ISignatureTransfer public constant PERMIT2 = ISignatureTransfer(0x000000000022D473030F116dDEE9F6B43aC78BA3);

    /// @notice Emitted when `settle` has moved the funds.
    event Settled();

    /// @notice Emitted when `settleWithPermit` has moved the funds.
    event SettledWithPermit();

    /// @notice The token's EIP-2612 `permit` reverted with `Error(string)`; settlement went on without it.
    event EIP2612PermitFailedWithReason(address indexed token, address indexed owner, string reason);

    /// @notice The token's EIP-2612 `permit` reverted with `Panic(uint256)`; settlement went on without it.
    event EIP2612PermitFailedWithPanic(address indexed token, address indexed owner, uint256 errorCode);

    /// @notice The token's EIP-2612 `permit` reverted with a custom error or no data; settlement went on without it.
    event EIP2612PermitFailedWithData(address indexed token, address indexed owner, bytes data);

    /// @notice The witness names the zero address as recipient.
    error InvalidDestination();

    /// @notice The block timestamp is before the witness's `validAfter`.
    error PaymentTooEarly();

    /// @notice The owner (payer) is the zero address.
    error InvalidOwner();

    /// @notice The amount to settle is zero (it would only burn the payer's nonce).
    error InvalidAmount();

    /// @notice The EIP-2612 permit value differs from the Permit2 permitted amount.
    error Permit2612AmountMismatch();

    /// @notice An EIP-2612 permit (owner approves Permit2 for `value` until `deadline`), signed by the owner.
    struct EIP2612Permit {
        uint256 value;
        uint256 deadline;
        bytes32 r;
        bytes32 s;
        uint8 v;
    }

    /// @dev Checks what Permit2 cannot see (amount, owner, recipient, start time), then has Permit2 verify the
    ///      payer's signature over the permit, this proxy as spender and `witnessHash`, and move `amount` to `to`.
    function _settle(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        address to,
        uint256 validAfter,
        bytes32 witnessHash,
        string memory witnessTypeString,
        bytes calldata signature
    ) internal {
        if (amount == 0) revert InvalidAmount();
        if (owner == address(0)) revert InvalidOwner();
        if (to == address(0)) revert InvalidDestination();
        if (block.timestamp < validAfter) revert PaymentTooEarly();
        PERMIT2.permitWitnessTransferFrom(
            permit,
            ISignatureTransfer.SignatureTransferDetails({to: to, requestedAmount: amount}),
            owner,
            witnessHash,
            witnessTypeString,
            signature
        );
    }

    /// @dev Submits the owner's EIP-2612 approval of Permit2. A failing `permit` (already used, front-run, or not
    ///      supported by the token) is reported by an event and does not stop settlement: the Permit2 transfer
    ///      then succeeds only if an allowance exists anyway.
    function _tryPermit2612(address token, address owner, EIP2612Permit calldata permit2612, uint256 permitted)
        internal
    {
        if (permit2612.value != permitted) revert Permit2612AmountMismatch();
        try IERC20Permit(token).permit(
            owner, address(PERMIT2), permit2612.value, permit2612.deadline, permit2612.v, permit2612.r, permit2612.s
        ) {} catch Error(string memory reason) {
            emit EIP2612PermitFailedWithReason(token, owner, reason);
        } catch Panic(uint256 errorCode) {
            emit EIP2612PermitFailedWithPanic(token, owner, errorCode);
        } catch (bytes memory data) {
            emit EIP2612PermitFailedWithData(token, owner, data);
        }
    }
}

/// @title X402ExactPermit2Proxy
/// @notice Spender for x402 `exact` payments with Permit2: always moves exactly `permit.permitted.amount` to the
///         recipient the payer signed, like EIP-3009's `transferWithAuthorization`. Anyone may submit.
/// @dev Canonical address 0x402085c248EeA27D92E8b30b2C58ed07f9E20001.
contract X402ExactPermit2Proxy is X402BasePermit2Proxy {
    /// @notice The tail that Permit2 appends to its `PermitWitnessTransferFrom(...,` stub.
    string public constant WITNESS_TYPE_STRING =
        "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,uint256 validAfter)";

    /// @notice EIP-712 type hash of the witness struct.
    bytes32 public constant WITNESS_TYPEHASH = keccak256("Witness(address to,uint256 validAfter)");

    /// @notice What the payer signs besides the permit: the recipient and the earliest settlement time.
    struct Witness {
        address to;
        uint256 validAfter;
    }

    /// @notice Pays `permit.permitted.amount` of `permit.permitted.token` from `owner` to `witness.to`.
    /// @param permit The signed Permit2 permit (this proxy is its spender).
    /// @param owner The payer, who signed.
    /// @param witness The signed recipient and start time.
    /// @param signature The payer's signature: 65 or 64 bytes for an EOA, anything its EIP-1271 check accepts.
    function settle(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external nonReentrant {
        _settleExact(permit, owner, witness, signature);
        emit Settled();
    }

    /// @notice Like `settle`, after first submitting the payer's EIP-2612 approval of Permit2 on the token.
    /// @param permit2612 The payer's EIP-2612 permit for Permit2; its value must equal the permitted amount.
    /// @param permit The signed Permit2 permit (this proxy is its spender).
    /// @param owner The payer, who signed both.
    /// @param witness The signed recipient and start time.
    /// @param signature The payer's Permit2 signature.
    function settleWithPermit(
        EIP2612Permit calldata permit2612,
        ISignatureTransfer.PermitTransferFrom calldata permit,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external nonReentrant {
        _tryPermit2612(permit.permitted.token, owner, permit2612, permit.permitted.amount);
        _settleExact(permit, owner, witness, signature);
        emit SettledWithPermit();
    }

    function _settleExact(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) private {
        bytes32 witnessHash = keccak256(abi.encode(WITNESS_TYPEHASH, witness.to, witness.validAfter));
        _settle(
            permit,
            permit.permitted.amount,
            owner,
            witness.to,
            witness.validAfter,
            witnessHash,
            WITNESS_TYPE_STRING,
            signature
        );
    }
}

/// @title X402UptoPermit2Proxy
/// @notice Spender for x402 `upto` payments: the payer signs a maximum, and only the facilitator named in the
///         witness may settle, for any non-zero amount up to that maximum, once.
/// @dev Canonical address 0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002.
contract X402UptoPermit2Proxy is X402BasePermit2Proxy {
    /// @notice The tail that Permit2 appends to its `PermitWitnessTransferFrom(...,` stub.
    string public constant WITNESS_TYPE_STRING = "Witness witness)TokenPermissions(address token,uint256 amount)"
        "Witness(address to,address facilitator,uint256 validAfter)";

    /// @notice EIP-712 type hash of the witness struct.
    bytes32 public constant WITNESS_TYPEHASH = keccak256("Witness(address to,address facilitator,uint256 validAfter)");

    /// @notice `msg.sender` is not the facilitator the payer signed.
    error UnauthorizedFacilitator();

    /// @notice The amount to settle is above the signed maximum.
    error AmountExceedsPermitted();

    /// @notice What the payer signs besides the permit: the recipient, the only allowed caller, the start time.
    struct Witness {
        address to;
        address facilitator;
        uint256 validAfter;
    }

    /// @notice Pays `amount` (at most `permit.permitted.amount`) from `owner` to `witness.to`.
    /// @param permit The signed Permit2 permit (this proxy is its spender); its amount is the maximum.
    /// @param amount What to charge now: non-zero, at most the maximum.
    /// @param owner The payer, who signed.
    /// @param witness The signed recipient, facilitator (must be `msg.sender`) and start time.
    /// @param signature The payer's signature: 65 or 64 bytes for an EOA, anything its EIP-1271 check accepts.
    function settle(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external nonReentrant {
        _checkCaller(permit, amount, witness);
        _settleUpto(permit, amount, owner, witness, signature);
        emit Settled();
    }

    /// @notice Like `settle`, after first submitting the payer's EIP-2612 approval of Permit2 on the token.
    /// @param permit2612 The payer's EIP-2612 permit for Permit2; its value must equal the permitted maximum.
    /// @param permit The signed Permit2 permit (this proxy is its spender); its amount is the maximum.
    /// @param amount What to charge now: non-zero, at most the maximum.
    /// @param owner The payer, who signed both.
    /// @param witness The signed recipient, facilitator (must be `msg.sender`) and start time.
    /// @param signature The payer's Permit2 signature.
    function settleWithPermit(
        EIP2612Permit calldata permit2612,
        ISignatureTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external nonReentrant {
        _checkCaller(permit, amount, witness);
        _tryPermit2612(permit.permitted.token, owner, permit2612, permit.permitted.amount);
        _settleUpto(permit, amount, owner, witness, signature);
        emit SettledWithPermit();
    }

    function _checkCaller(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        Witness calldata witness
    ) private view {
        if (amount > permit.permitted.amount) revert AmountExceedsPermitted();
        if (msg.sender != witness.facilitator) revert UnauthorizedFacilitator();
    }

    function _settleUpto(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) private {
        bytes32 witnessHash =
            keccak256(abi.encode(WITNESS_TYPEHASH, witness.to, witness.facilitator, witness.validAfter));
        _settle(permit, amount, owner, witness.to, witness.validAfter, witnessHash, WITNESS_TYPE_STRING, signature);
    }
}
